"""The seed's story, end to end, against a running Marrow (run it as often as you like: each run is a new scope).

    marrow serve --export-root /tmp/story/export &
    .venv/bin/python python/examples/agent_loop.py --uri grpc://127.0.0.1:50051 --export-root /tmp/story/export

1. An agent remembers things about its user; familiar questions are answered from memory (L0) or with conditioned
   context (L1); a question about a fact it never heard is a missing fact: ask, remember, and it is known.
2. The agent says which retrieved memories helped (``MemoryConditioner.feedback_on``).
3. A new kind of task finds no adapter → an L3 request (a ``training_jobs`` row). L4 maintenance trains a query
   adapter for the scope from the feedback (numpy, seconds), stores it in ``adapters`` / ``tensors`` and closes the
   job; the next such task routes to L2, which retrieves through the adapter (``apply_lora`` on the server).
4. A correction arrives ("…on Tuesday", not Monday): maintenance consolidates, the newer fact stays, the history
   keeps both. Outcomes are reported, the thresholds learned, and the decision log is exported to Parquet.

``--export-root`` must be the directory the server was started with.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyarrow.parquet as pq

import marrow

FACTS = [
    "The user's name is Dana and she is a lawyer in Munich",
    "The user's favourite colour is blue",
    "The user prefers short answers",
    "The user has a dog called Rex",
    "The user drinks oat-milk flat whites",
    "Dana's sister Mara lives in Vienna",
    "Dana plays tennis on Thursday evenings",
    "Dana's office is on Leopoldstrasse",
    "Dana is allergic to peanuts",
    "Dana's car is a green Volvo",
    "Dana reads crime novels before bed",
    "Dana's dentist appointment is on Monday",
]
# Questions an agent asked, with the fact that answered each: the feedback the brain learns from.
ASKED = [
    ("What does the user drink in the morning?", 4),
    ("Which coffee does Dana order?", 4),
    ("Where does Dana work?", 7),
    ("Which street is the user's office on?", 7),
    ("Which sport does the user play?", 6),
    ("What does Dana do on Thursday nights?", 6),
    ("Who is Dana's sibling?", 5),
    ("Who lives in Vienna?", 5),
    ("What can't Dana eat?", 8),
    ("Does the user have any food allergies?", 8),
    ("What does Dana drive?", 9),
    ("What colour is the user's car?", 9),
    ("What does the user read at night?", 10),
    ("Which books does Dana like?", 10),
    ("What is the user's job?", 0),
    ("Where does the user live?", 0),
    ("What pet does the user have?", 3),
    ("What is the dog's name?", 3),
    ("How long should replies be?", 2),
    ("Does Dana like long explanations?", 2),
    ("When is the dentist?", 11),
    ("Which day is Dana's dental check-up?", 11),
    ("What colour does Dana like?", 1),
    ("What is the user's favourite colour?", 1),
]
TASK = "Translate this rental contract clause into formal German"


def say(step: str, text: str) -> None:
    print(f"[{step}] {text}")


def show(d: marrow.Decision) -> None:
    extra = d.answer or (d.adapter.name if d.adapter else None) or d.job_id or f"{len(d.context.items)} memories"
    say(f"L{d.level}", f"u={d.uncertainty.score:.2f} {d.action:<22} {d.query!r} -> {extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", default="grpc://127.0.0.1:50051")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--export-root", type=Path, required=True)
    ap.add_argument("--namespace", default=f"story-{int(time.time() * 1000)}")
    args = ap.parse_args()
    ns = args.namespace

    with marrow.connect(args.uri, args.user, args.password) as db:
        mem = marrow.Memory(db, actor="agent_loop")
        cond = marrow.MemoryConditioner(mem)
        router = marrow.EvolutionRouter(mem, conditioner=cond, thresholds_ttl=0)
        router.set_thresholds(ns, marrow.Thresholds(l0_max_uncertainty=0.3, l1_max_uncertainty=0.6))
        ids = mem.remember_many(FACTS, namespace=ns)
        say("mem", f"namespace {ns!r}: remembered {len(FACTS)} facts")

        # 1. Familiar questions, and one about a fact nobody told the agent.
        for q in ["What is the user's favourite colour?", "What is the name of the user's dog?"]:
            d = router.route(q, ns)
            show(d)
            router.record_outcome(d.id, success=True)
        missing = router.route("What is the user's blood type?", ns)
        show(missing)
        if missing.action == "ask_or_remember":
            mem.remember("The user's blood type is A negative", ns)
            say("mem", "asked the user and remembered: blood type A negative")
            show(router.route("What is the user's blood type?", ns))

        # 2. Feedback: which retrieved memory answered each question.
        for q, answer in ASKED:
            ctx = cond.condition(q, ns, k=5)
            cond.feedback_on(ctx, [ids[answer]])
        say("feedback", f"{len(ASKED)} questions judged (memory_feedback)")

        # 3. A new kind of task: no adapter → L3; maintenance trains one from the feedback; the task goes to L2.
        first = router.route(TASK, ns)
        show(first)
        router.record_outcome(first.id, success=False, note="retrieval was not good enough")
        m = router.maintain(ns)
        say("L4", f"trained {m.trained or 'nothing'}{f' ({m.training_note})' if m.training_note else ''}")
        qa = marrow.adapters.latest_query_adapter(mem, ns)
        if qa is not None:
            mx = qa.metrics
            before, after = mx.get("holdout_r5_before", float("nan")), mx.get("holdout_r5_after", float("nan"))
            say(
                "L3",
                f"query adapter {qa.id}: rank {qa.rank}, {mx['queries']} questions, {mx['seconds']} s;"
                f" held-out recall@5 {before:.2f} -> {after:.2f}",
            )
        second = router.route(TASK, ns)
        show(second)
        router.record_outcome(second.id, success=True)

        # 4. A correction, consolidated by maintenance: the newer fact stays, the history keeps both.
        mem.remember("Dana's dentist appointment is on Tuesday", ns)
        m = router.maintain(ns)
        for merge in m.merges:
            say("L4", f"{mem.get(merge.kept).content!r} replaces {merge.merged} ({merge.relation})")
        kept = {r.content for r in mem.all(ns)}
        assert (
            "Dana's dentist appointment is on Tuesday" in kept and "Dana's dentist appointment is on Monday" not in kept
        )
        learned = router.learn(ns)
        say(
            "learn",
            f"thresholds now t0={learned.l0_max_uncertainty:.3f} t1={learned.l1_max_uncertainty:.3f} "
            f"t_adapter={learned.l2_max_adapter_distance:.3f}",
        )

        # 5. The decision log, exported and read back.
        router.close()
        name = f"decisions-{ns}.parquet"
        rows = router.export_decisions(name, namespace=ns)
        table = pq.read_table(args.export_root / name)
        say("export", f"{rows} rows -> {args.export_root / name}")
        for r in table.select(["level", "action", "uncertainty", "adapter", "success"]).to_pylist():
            u = "" if r["uncertainty"] is None else f"{r['uncertainty']:.2f}"
            say("log", f"L{r['level']} {r['action']:<22} u={u:<5} adapter={r['adapter']} success={r['success']}")
        levels = set(table.column("level").to_pylist())
        assert {3, 4} <= levels, levels


if __name__ == "__main__":
    main()
