"""What one small write costs the server (issue 22): single-row INSERTs into `memory_events` in one call each, then
`--clients` threads (each with its own connection) calling `Memory.remember` with a vector, for `--seconds` each.
Prints p50/p95 latency, writes/s and the server's CPU time per write (from /proc, so Linux only). Release build.

Usage: .venv/bin/python bench/small_writes.py BIN [--seconds 10] [--clients 8]

Run builds one after the other in the same period and compare within that period: on a filesystem that creates
files slowly (ext4 without a journal skips recently deleted inodes one by one) the cost of a commit drifts with
every benchmark that deletes files.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import marrow
from _server import start, stop


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        proc, uri = start(args.binary, Path(d) / "data")
        try:
            with marrow.connect(uri) as db:
                marrow.Memory(db, access_log="off")
                insert = (
                    "INSERT INTO memory_events (memory_id, namespace, operation, new_content, actor)"
                    " VALUES ($1, 's', 'add', 'x', 'bench')"
                )
                for i in range(50):
                    db.execute(insert, [f"warm-{i}"])
                times = []
                c0, end = cpu_seconds(proc.pid), time.time() + args.seconds
                while time.time() < end:
                    t = time.perf_counter()
                    db.execute(insert, [str(len(times))])
                    times.append(time.perf_counter() - t)
                cpu = (cpu_seconds(proc.pid) - c0) / len(times)
                times.sort()
                print(
                    f"single-row INSERT, one client: p50 {times[len(times) // 2] * 1e3:.2f} ms, p95 "
                    f"{times[int(len(times) * 0.95)] * 1e3:.2f} ms, server CPU {cpu * 1e3:.2f} ms per write"
                )

            counts = [0] * args.clients
            ready = threading.Barrier(args.clients + 1)
            deadline = [float("inf")]

            def client(c: int) -> None:
                with marrow.connect(uri) as conn:
                    mem = marrow.Memory(conn, access_log="off")
                    vector = np.random.default_rng(c).random(384, dtype=np.float32)
                    for i in range(10):
                        mem.remember(f"warm {c} {i}", namespace="warm", embedding=vector)
                    ready.wait()
                    while time.time() < deadline[0]:
                        mem.remember(f"client {c} note {counts[c]}", namespace="s", embedding=vector)
                        counts[c] += 1

            threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
            for t in threads:
                t.start()
            ready.wait()
            c0, t0 = cpu_seconds(proc.pid), time.time()
            deadline[0] = t0 + args.seconds
            for t in threads:
                t.join()
            elapsed, n = time.time() - t0, sum(counts)
            cpu = (cpu_seconds(proc.pid) - c0) / n
            print(
                f"{args.clients} clients remembering one memory at a time: {n / elapsed:.0f} memories/s, server CPU "
                f"{cpu * 1e3:.2f} ms per remember (two writes: the memory and its event)"
            )
            with marrow.connect(uri) as db:
                stored = db.scalar("SELECT count(*) FROM memories WHERE namespace = 's'")
                assert stored == n, f"{n} remembers acknowledged, {stored} stored"
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
