"""Where a recall's time goes, per mode (issues 20/22): on one server with the first two LoCoMo dev conversations
(788 memories), each mode's `Memory.recall` with the query vector given, next to the floor of one statement in one
call (`SELECT $1`), and the hybrid recall with the access log on. Release build; one_call client.

Usage: .venv/bin/python bench/recall_modes.py BIN [EVAL_DIR] [N]   (prints p50/p95 per row)
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import marrow
from _server import start, stop
from locomo import load
from marrow import Memory


def main() -> None:
    binary = sys.argv[1]
    eval_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/eval/locomo-dev")
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 400
    convs = load(eval_dir)[:2]
    with tempfile.TemporaryDirectory() as d:
        proc, uri = start(binary, Path(d) / "data")
        try:
            with marrow.connect(uri, one_call=True) as db:
                mem = Memory(db, access_log="off")
                for c in convs:
                    mem.remember_many([t for _, t in c["turns"]], namespace=c["name"])
                db.sql("OPTIMIZE TABLE memories")
                qs = [(c["name"], q["question"]) for c in convs for q in c["qa"]][:200]
                vs = [db.scalar("SELECT embed($1)", [q]) for _, q in qs]

                def run(label: str, f: Callable[[int], object]) -> None:
                    for i in range(50):
                        f(i)
                    ts = []
                    for i in range(n):
                        t = time.perf_counter()
                        f(i)
                        ts.append(time.perf_counter() - t)
                    ts.sort()
                    p50, p95 = ts[len(ts) // 2] * 1e3, ts[int(len(ts) * 0.95)] * 1e3
                    print(f"| {label} | {p50:.2f} | {p95:.2f} |", flush=True)

                def recall(m: Memory, mode: str) -> Callable[[int], object]:
                    return lambda i: m.recall(
                        qs[i % 200][1],
                        qs[i % 200][0],
                        10,
                        embedding=vs[i % 200],
                        mode=mode,
                    )

                print("| call | p50 ms | p95 ms |\n|---|---|---|")
                run(
                    "`SELECT $1` in one call (the floor)",
                    lambda i: db.scalar("SELECT $1::VARCHAR", ["x"]),
                )
                for mode in ("hybrid", "vector", "keyword"):
                    run(f"recall, {mode}, access log off", recall(mem, mode))
                logged = Memory(db)
                run("recall, hybrid, access log on", recall(logged, "hybrid"))
                logged.close()
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
