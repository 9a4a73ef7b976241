"""Issue 19's measurements, each binary side by side in one run (release builds):

1. Responsiveness: `SELECT 1` latency (p50/p99/max) from one client while three others keep planning a statement with
   a 200,000-element IN list (planning does not yield).
2. Ingest under a memory limit: the server's peak RSS (VmHWM) while a client streams 1.5 GB through ADBC's
   adbc_ingest to a server started with --memory-limit 256MiB, and what the client got back.
3. Point query through ADBC (prepared, $1 bound, BTREE index) on a 1M-row table, p50/p95: what running each statement
   off the runtime's workers costs a small query.

Usage: bench/hostile.sh BEFORE_BINARY AFTER_BINARY
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import numpy as np
import pyarrow as pa


def start(binary: str, data: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [binary, "--log", "info", "serve", "--data-dir", str(data), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"listening on (grpc://\S+)", re.sub(r"\x1b\[[0-9;]*m", "", line))
        if found:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc, found.group(1)
    raise RuntimeError(f"{binary} did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def responsiveness(binary: str) -> str:
    big_in = "SELECT count(*) FROM generate_series(1, 10) AS g(v) WHERE v IN (" + ", ".join(
        str(i) for i in range(200_000)
    ) + ")"
    with tempfile.TemporaryDirectory() as d:
        proc, uri = start(binary, Path(d) / "data")
        done = threading.Event()

        def plan_forever() -> None:
            with flight_sql.connect(uri) as conn:
                cur = conn.cursor()
                while not done.is_set():
                    try:
                        cur.execute(big_in)
                        cur.fetchall()
                    except Exception:  # noqa: BLE001 - a refused statement is fine here
                        pass

        planners = [threading.Thread(target=plan_forever, daemon=True) for _ in range(3)]
        for p in planners:
            p.start()
        time.sleep(2)
        lat = []
        deadline = time.time() + 20
        with flight_sql.connect(uri) as conn:
            cur = conn.cursor()
            while time.time() < deadline or len(lat) < 5:
                t = time.perf_counter()
                cur.execute("SELECT 1")
                cur.fetchall()
                lat.append(time.perf_counter() - t)
                if len(lat) >= 200:
                    break
        done.set()
        stop(proc)
        ms = np.array(lat) * 1000
        return (
            f"SELECT 1 under 3 planners of a 200k IN list: n={len(ms)} p50 {np.percentile(ms, 50):.1f} ms, "
            f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms"
        )


def ingest_rss(binary: str, total_bytes: int = 1_500_000_000) -> str:
    rows_per_batch = 10_000  # 10 MB messages: under the Flight driver's 16 MiB
    width = 1_000  # bytes per row in one binary column
    batches = total_bytes // (rows_per_batch * width)
    payload = pa.array([b"x" * width] * rows_per_batch, type=pa.binary())
    schema = pa.schema([("id", pa.int64()), ("blob", pa.binary())])

    def gen():  # type: ignore[no-untyped-def]
        for b in range(batches):
            ids = pa.array(np.arange(b * rows_per_batch, (b + 1) * rows_per_batch, dtype=np.int64))
            yield pa.record_batch([ids, payload], schema=schema)

    with tempfile.TemporaryDirectory() as d:
        proc, uri = start(binary, Path(d) / "data", "--memory-limit", "256MiB")
        peak = [0]
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.is_set():
                try:
                    status = Path(f"/proc/{proc.pid}/status").read_text()
                    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
                    peak[0] = max(peak[0], hwm)
                except (OSError, AttributeError):
                    pass
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        outcome = "ok"
        t = time.perf_counter()
        try:
            with flight_sql.connect(uri) as conn:
                with conn.cursor() as cur:
                    reader = pa.RecordBatchReader.from_batches(schema, gen())
                    n = cur.adbc_ingest("blobs", reader, mode="create")
                    outcome = f"ingested {n} rows"
        except Exception as e:  # noqa: BLE001 - the outcome is what is reported
            outcome = str(e).split("\n")[0][:160]
        elapsed = time.perf_counter() - t
        time.sleep(0.5)
        stop_sampling.set()
        sampler.join()
        alive = proc.poll() is None
        stop(proc)
        return (
            f"1.5 GB ingest under --memory-limit 256MiB: peak RSS {peak[0] / 1024:.0f} MiB, "
            f"{elapsed:.1f} s, server {'up' if alive else 'DEAD'}; client got: {outcome}"
        )


def point_query(binary: str, data: Path) -> str:
    proc, uri = start(binary, data)
    lat = []
    rng = np.random.default_rng(3)
    with flight_sql.connect(uri) as conn:
        cur = conn.cursor()
        for _ in range(520):
            key = int(rng.integers(0, 1_000_000))
            t = time.perf_counter()
            cur.execute("SELECT * FROM numbers WHERE id = $1", parameters=[key])
            rows = cur.fetchall()
            lat.append(time.perf_counter() - t)
            assert len(rows) == 1
    stop(proc)
    ms = np.array(lat[20:]) * 1000
    return f"point query (BTREE, prepared $1), 500 queries: p50 {np.percentile(ms, 50):.2f} ms, p95 {np.percentile(ms, 95):.2f} ms"


def main() -> None:
    binaries = {"before": sys.argv[1], "after": sys.argv[2]}
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "points"
        proc, uri = start(binaries["after"], data)
        with flight_sql.connect(uri) as conn:
            cur = conn.cursor()
            cur.execute(
                "CREATE TABLE numbers AS SELECT value AS id, value * 2 AS a, random() AS b, 'row ' || value AS c "
                "FROM generate_series(0, 999999)"
            )
            cur.execute("CREATE INDEX numbers_id ON numbers USING BTREE (id)")
            cur.close()
        stop(proc)
        for name, binary in binaries.items():
            print(f"## {name}: {binary}", flush=True)
            print(point_query(binary, data), flush=True)
            print(responsiveness(binary), flush=True)
            print(ingest_rss(binary), flush=True)


if __name__ == "__main__":
    main()
