"""Issue 21's measurements of the memory layer and its brain (release build, one run):

1. **Query adapters on LoCoMo.** One scope per conversation, each dialog turn a memory. For the even-numbered
   answerable questions the agent's feedback is recorded (``MemoryConditioner.feedback``: the evidence turns
   helpful, the other turns of the top 10 not), a query adapter is trained per scope (``train_query_adapter``, its
   wall time), and recall@5/@10 on the **odd-numbered questions** (never fed back) is measured before and after,
   in vector and hybrid mode. Scopes are independent: a scope's adapter never applies to another.
2. **Consolidation of 10,000 memories** (LoCoMo turns, one in three restated with a correction or a repeat): the
   wall time, the Lance commits it made to ``memories`` and the fragments left.
3. **route()**: p50/p95 and client round trips per decision, with the default router settings.

Usage: bench/brain.sh [EVAL_DIR] [MARROW_BINARY]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import lance
import numpy as np

import locomo
import marrow
from _server import start, stop
from marrow import EvolutionRouter, Memory, MemoryConditioner
from marrow.adapters import train_query_adapter

N_CONSOLIDATE = int(__import__("os").environ.get("BRAIN_N", "10000"))


def recall_at(mem: Memory, c: dict, questions: list[dict], mode: str, adapter=None) -> tuple[float, float]:
    r5, r10 = [], []
    for q in questions:
        hits = mem.recall(q["question"], c["name"], k=10, mode=mode, adapter=adapter, log_access=False)
        found = [c["dia"][h.id] for h in hits]
        r5.append(locomo.score(found, q["evidence"], 5))
        r10.append(locomo.score(found, q["evidence"], 10))
    return float(np.mean(r5)), float(np.mean(r10))


def adapters_on_locomo(uri: str, convs: list[dict]) -> None:
    with marrow.connect(uri) as db:
        mem = Memory(db)
        cond = MemoryConditioner(mem)
        for c in convs:
            ids = mem.remember_many([t for _, t in c["turns"]], namespace=c["name"])
            c["dia"] = dict(zip(ids, (i for i, _ in c["turns"]), strict=True))
            c["id_of"] = {d: i for i, d in c["dia"].items()}
        db.execute("OPTIMIZE TABLE memories")
        rows = {m: [] for m in ("vector", "hybrid")}
        seconds = []
        for c in convs:
            fed, held = c["qa"][0::2], c["qa"][1::2]
            for q in fed:
                hits = mem.recall(q["question"], c["name"], k=10, log_access=False)
                judgments = {h.id: False for h in hits}
                judgments.update({c["id_of"][e]: True for e in q["evidence"] if e in c["id_of"]})
                cond.feedback(c["name"], q["question"], judgments)
            before = {m: recall_at(mem, c, held, m) for m in rows}
            t = time.perf_counter()
            qa = train_query_adapter(mem, c["name"])
            seconds.append(time.perf_counter() - t)
            after = {m: recall_at(mem, c, held, m, qa) for m in rows}
            for m in rows:
                rows[m].append((len(held), before[m], after[m]))
            print(
                f"  {c['name']}: {len(fed)} questions fed back, {len(held)} held out, trained in {seconds[-1]:.2f} s;"
                f" vector R@5 {before['vector'][0]:.3f} -> {after['vector'][0]:.3f},"
                f" hybrid R@5 {before['hybrid'][0]:.3f} -> {after['hybrid'][0]:.3f}",
                flush=True,
            )
        print("\n| held-out questions, recall mode | R@5 before | R@5 after | R@10 before | R@10 after |")
        print("|---|---|---|---|---|")
        for m, rs in rows.items():
            n = sum(r[0] for r in rs)

            def mean(i: int, j: int, rs=rs, n=n) -> float:
                return sum(r[0] * r[i][j] for r in rs) / n

            print(f"| {m} ({n} questions) | {mean(1, 0):.3f} | {mean(2, 0):.3f} | {mean(1, 1):.3f} | {mean(2, 1):.3f} |")
        print(f"training: {statistics.mean(seconds):.2f} s per scope on average, {max(seconds):.2f} s at most\n")


def consolidation(uri: str, data: Path, convs: list[dict], n: int = N_CONSOLIDATE) -> None:
    turns = [t for c in convs for _, t in c["turns"]]
    rng = np.random.default_rng(0)
    items = []
    while len(items) < n:
        t = turns[len(items) % len(turns)]
        kind = rng.integers(3)
        # A repeat (the same words), a correction (one word changed), or something new.
        items.append(t if kind != 0 else (t + " Really." if rng.integers(2) else t.replace(" the ", " a ", 1)))
    with marrow.connect(uri) as db:
        mem = Memory(db)
        for i in range(0, n, 1000):
            mem.remember_many(items[i : i + 1000], namespace="bulk")
        v0 = int(db.scalar("SELECT max(version) FROM marrow_versions('memories')"))
        f0 = len(lance.dataset(str(data / "memories.lance")).get_fragments())
        t = time.perf_counter()
        merges = mem.consolidate("bulk")
        seconds = time.perf_counter() - t
        v1 = int(db.scalar("SELECT max(version) FROM marrow_versions('memories')"))
        f1 = len(lance.dataset(str(data / "memories.lance")).get_fragments())
        relations = {r: sum(m.relation == r for m in merges) for r in ("duplicate", "contradiction")}
        print(
            f"consolidate 10,000 memories: {len(merges)} merges ({relations}) in {seconds:.1f} s;"
            f" {v1 - v0} commits to memories; fragments {f0} -> {f1}; {mem.count('bulk')} memories left\n"
        )


def routing(uri: str) -> None:
    with marrow.connect(uri) as db:
        mem = Memory(db)
        router = EvolutionRouter(mem)
        facts = [f"The user's item {i} is kept in drawer {i % 17}" for i in range(1000)]
        mem.remember_many(facts, namespace="router")
        questions = [f"Where is the user's item {i}?" for i in range(0, 1000, 5)]
        router.route(questions[0], "router")
        calls = [0]
        for name in ("sql", "execute", "scalar", "ingest"):
            original = getattr(db, name)

            def counting(*args, _original=original, **kwargs):
                calls[0] += 1
                return _original(*args, **kwargs)

            setattr(db, name, counting)
        lat, trips = [], []
        for q in questions:
            before = calls[0]
            t = time.perf_counter()
            router.route(q, "router", auto_maintain=False)
            lat.append(time.perf_counter() - t)
            trips.append(calls[0] - before)
        router.close()
        lat_ms = np.array(lat) * 1e3
        print(
            f"route(): p50 {np.percentile(lat_ms, 50):.1f} ms, p95 {np.percentile(lat_ms, 95):.1f} ms over"
            f" {len(questions)} decisions (1,000 memories); round trips per decision: median"
            f" {statistics.median(trips)}, max {max(trips)} (a buffered decision-log write every 16)"
        )


def main() -> None:
    binary, eval_dir = sys.argv[1], Path(sys.argv[2])
    convs = locomo.load(eval_dir)
    with tempfile.TemporaryDirectory() as d:
        proc, uri = start(binary, Path(d) / "data")
        try:
            print(f"{len(convs)} conversations, {sum(len(c['qa']) for c in convs)} questions")
            adapters_on_locomo(uri, convs)
        finally:
            stop(proc)
    with tempfile.TemporaryDirectory() as d:
        proc, uri = start(binary, Path(d) / "data")
        try:
            consolidation(uri, Path(d) / "data", convs)
            routing(uri)
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
