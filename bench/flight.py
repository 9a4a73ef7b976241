"""Issue 3's Flight benchmarks, side by side in one run (release `marrow` binary):

1. DoGet of `SELECT *` over a 10M-row numeric table: raw pyarrow.flight DoGet and ADBC fetch_arrow_table against
   Marrow, next to a pyarrow C++ Flight server serving the same table from memory.
2. Bulk ingest of 1M memories with 384-d embeddings: ADBC adbc_ingest into Marrow vs pylance write_dataset and
   LanceDB Table.add.
3. Point-query latency through ADBC with a prepared statement ($1), p50/p95.

Usage: bench/flight.sh  (builds the release binary, prepares the data, runs this script)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import lance
import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

import marrow

MARROW = sys.argv[1]
DATA = sys.argv[2]  # data dir holding numbers.lance (10M rows)
N_INGEST = int(os.environ.get("N_INGEST", "1000000"))
REPS = int(os.environ.get("REPS", "3"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_marrow(data_dir: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    p = subprocess.Popen([MARROW, "--log", "info", "serve", "--data-dir", data_dir, "--port", str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:  # type: ignore[union-attr]
        if "listening on" in line:
            break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()  # type: ignore[union-attr]
    return p, port


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num: int, payload: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def statement(sql: str) -> bytes:
    return field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + field(
        2, field(1, sql.encode()))


def best(fn, reps=REPS):
    times = []
    out = None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


class MemoryServer(flight.FlightServerBase):
    def __init__(self, table: pa.Table, port: int):
        super().__init__(f"grpc://127.0.0.1:{port}")
        self.table = table

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def main() -> None:
    results = []
    proc, port = start_marrow(DATA)
    try:
        uri = f"grpc://127.0.0.1:{port}"
        client = flight.FlightClient(uri)

        def raw_doget():
            info = client.get_flight_info(flight.FlightDescriptor.for_command(statement("SELECT * FROM numbers")))
            return pa.concat_tables([client.do_get(ep.ticket).read_all() for ep in info.endpoints])

        t_raw, table = best(raw_doget)
        nbytes = table.nbytes
        results.append(("Marrow DoGet SELECT * (pyarrow.flight)", table.num_rows, nbytes / t_raw / 1e6, t_raw))

        conn = marrow.connect(uri)
        cur = conn.cursor()

        def adbc_fetch():
            cur.execute("SELECT * FROM numbers")
            return cur.fetch_arrow_table()

        t_adbc, t2 = best(adbc_fetch)
        results.append(("Marrow ADBC fetch_arrow_table", t2.num_rows, t2.nbytes / t_adbc / 1e6, t_adbc))

        mem_port = free_port()
        mem = MemoryServer(table, mem_port)
        threading.Thread(target=mem.serve, daemon=True).start()
        mclient = flight.FlightClient(f"grpc://127.0.0.1:{mem_port}")
        t_mem, t3 = best(lambda: mclient.do_get(flight.Ticket(b"all")).read_all())
        results.append(("pyarrow C++ Flight server (in memory)", t3.num_rows, t3.nbytes / t_mem / 1e6, t_mem))
        mem.shutdown()

        # Point queries: prepared statement with a bound parameter, one row each.
        lat = []
        rng = np.random.default_rng(1)
        for i in range(300):
            key = int(rng.integers(0, table.num_rows))
            t = time.perf_counter()
            cur.execute("SELECT * FROM numbers WHERE id = $1", parameters=[key])
            rows = cur.fetchall()
            lat.append(time.perf_counter() - t)
            assert len(rows) == 1
        lat_ms = np.array(lat[20:]) * 1000

        # The same with a BTREE index on id (dropped again afterwards: the table is shared with bench/scan.sh).
        cur.execute("CREATE INDEX IF NOT EXISTS bench_numbers_id ON numbers USING BTREE (id)")
        cur.fetchall()
        lat = []
        try:
            for i in range(300):
                key = int(rng.integers(0, table.num_rows))
                t = time.perf_counter()
                cur.execute("SELECT * FROM numbers WHERE id = $1", parameters=[key])
                rows = cur.fetchall()
                lat.append(time.perf_counter() - t)
                assert len(rows) == 1
        finally:
            cur.execute("DROP INDEX bench_numbers_id")
            cur.fetchall()
        lat_idx_ms = np.array(lat[20:]) * 1000
        cur.close()
        conn.close()
    finally:
        proc.terminate()
        proc.wait()

    print("\n## DoGet of SELECT * (10M rows x 4 numeric columns)")
    print(f"{'path':<42} {'rows':>10} {'MB/s':>9} {'s':>7}")
    for name, rows, mbs, t in results:
        print(f"{name:<42} {rows:>10} {mbs:>9.0f} {t:>7.2f}")
    print(f"ratio Marrow DoGet / pyarrow in-memory server: {t_mem / t_raw:.2f}")
    print(f"ratio Marrow ADBC / pyarrow in-memory server: {t_mem / t_adbc:.2f}")
    print("\n## Point query through ADBC (prepared, $1 bound), 280 queries on a 10M-row table without index")
    print(f"p50 {np.percentile(lat_ms, 50):.1f} ms, p95 {np.percentile(lat_ms, 95):.1f} ms")
    print("## The same with a BTREE index on id")
    print(f"p50 {np.percentile(lat_idx_ms, 50):.2f} ms, p95 {np.percentile(lat_idx_ms, 95):.2f} ms")

    # Bulk ingest of memories with 384-d embeddings.
    rng = np.random.default_rng(7)
    emb = rng.standard_normal((N_INGEST, 384), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    mem_table = pa.table({
        "id": pa.array([f"m{i}" for i in range(N_INGEST)]),
        "namespace": pa.array(["bench"] * N_INGEST),
        "kind": pa.array(["note"] * N_INGEST),
        "content": pa.array([f"memory number {i}" for i in range(N_INGEST)]),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), 384),
        "importance": pa.array(np.full(N_INGEST, 0.5, dtype=np.float32)),
    })
    with tempfile.TemporaryDirectory() as d:
        proc, port = start_marrow(os.path.join(d, "marrow"))
        try:
            with marrow.connect(f"grpc://127.0.0.1:{port}") as conn, conn.cursor() as cur:
                t = time.perf_counter()
                # ADBC's Flight SQL driver sends each batch as one message, capped at 16 MiB: stream ~6 MiB batches.
                batches = pa.RecordBatchReader.from_batches(mem_table.schema, mem_table.to_batches(max_chunksize=4096))
                cur.adbc_ingest("bench_memories", batches, mode="create")
                t_marrow = time.perf_counter() - t
                cur.execute("SELECT count(*) FROM bench_memories")
                assert cur.fetchone()[0] == N_INGEST
        finally:
            proc.terminate()
            proc.wait()
        t = time.perf_counter()
        lance.write_dataset(mem_table, os.path.join(d, "pylance.lance"))
        t_lance = time.perf_counter() - t
        ldb = lancedb.connect(os.path.join(d, "lancedb"))
        ltable = ldb.create_table("memories", schema=mem_table.schema)
        t = time.perf_counter()
        ltable.add(mem_table)
        t_lancedb = time.perf_counter() - t
        assert ltable.count_rows() == N_INGEST
    print(f"\n## Bulk ingest of {N_INGEST} memories with 384-d float32 embeddings ({mem_table.nbytes/1e6:.0f} MB)")
    print(f"Marrow adbc_ingest (create)   {N_INGEST / t_marrow:>10.0f} rows/s  ({t_marrow:.2f} s)")
    print(f"pylance write_dataset         {N_INGEST / t_lance:>10.0f} rows/s  ({t_lance:.2f} s)")
    print(f"LanceDB {lancedb.__version__} Table.add          {N_INGEST / t_lancedb:>10.0f} rows/s  ({t_lancedb:.2f} s)")
    print(f"ratio Marrow / pylance: {t_lance / t_marrow:.2f}")
    print(f"ratio Marrow / LanceDB: {t_lancedb / t_marrow:.2f}")


if __name__ == "__main__":
    main()
