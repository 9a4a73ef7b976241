"""Where a recall's time goes, per mode (issues 20/22): on one server with the first two LoCoMo dev conversations
(788 memories), each mode's `Memory.recall` with the query vector given, next to the floor of one statement in one
call (`SELECT $1`), and the hybrid recall with the access log on. Release build; one_call client.

Usage: .venv/bin/python bench/recall_modes.py BIN [EVAL_DIR] [N]   (prints p50/p95 per row)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from locomo import two_conversations
from marrow import Memory


def main() -> None:
    binary = sys.argv[1]
    eval_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/eval/locomo-dev")
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 400
    with two_conversations(binary, eval_dir, 200) as (db, mem, qs, vs, _):

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
                qs[i % len(qs)][1],
                qs[i % len(qs)][0],
                10,
                embedding=vs[i % len(qs)],
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


if __name__ == "__main__":
    main()
