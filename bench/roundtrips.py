"""Round trips of one recall (issue 22, item 3): the same hybrid `Memory.recall` on one server, its statement sent
in one call (`Client.sql`: DoExchange with the parameters, the result in the same call) or through Flight SQL's
prepared path (ADBC: bind with DoPut, GetFlightInfo, DoGet; the statement kept prepared per SQL text), interleaved
question by question so both see the same machine. LoCoMo dev turns, query vectors given, access log off.

Usage: .venv/bin/python bench/roundtrips.py BIN [EVAL_DIR]   (a release `marrow`; prints p50/p95 per path)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from locomo import two_conversations

QUESTIONS = 300


def main() -> None:
    binary = sys.argv[1]
    eval_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/eval/locomo-dev")
    with two_conversations(binary, eval_dir, QUESTIONS) as (db, mem, questions, vectors, memories):
        one_call = db._flight
        times: dict[str, list[float]] = {
            "one call (DoExchange)": [],
            "Flight SQL prepared (3 RPCs)": [],
        }
        for warm in (True, False):
            for (namespace, q), v in zip(questions, vectors):
                for path, samples in times.items():
                    # The client falls back to ADBC's prepared statements without its Flight connection.
                    db._flight = one_call if path.startswith("one") else None
                    t = time.perf_counter()
                    mem.recall(q, namespace, 10, embedding=v)
                    if not warm:
                        samples.append(time.perf_counter() - t)
        db._flight = one_call
    print(f"{len(questions)} hybrid recalls per path, {memories} memories\n")
    print("| path | p50 ms | p95 ms |\n|---|---|---|")
    for path, ts in times.items():
        ts.sort()
        print(
            f"| {path} | {statistics.median(ts) * 1e3:.2f} | {ts[int(len(ts) * 0.95)] * 1e3:.2f} |"
        )


if __name__ == "__main__":
    main()
