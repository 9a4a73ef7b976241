"""The memory layer's semantics (scopes, pages, patches, history, consolidation) and the brain that learns from
feedback (query adapters, the router's learning), against the real server."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from safetensors.numpy import load_file

import marrow
from marrow import EvolutionRouter, Memory, MemoryConditioner, Thresholds, scope
from marrow.adapters import QUERY_ADAPTER_KIND, latest_query_adapter, train_query_adapter


def versions(db: marrow.Client, table: str) -> int:
    return int(db.scalar(f"SELECT max(version) FROM marrow_versions('{table}')"))


def test_scopes_pages_and_delete_all(server):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        planner, run, coach = scope("alice", "planner"), scope("alice", "planner", "r1"), scope("alice", "coach")
        assert (planner, run) == ("user=alice/agent=planner", "user=alice/agent=planner/run=r1")
        mem.remember("Alice likes green tea", planner)
        mem.remember("Alice runs on Monday mornings", run)
        mem.remember("Alice's coach says she should stretch more", coach)
        mem.remember("Alice likes black coffee", scope("alicia", "planner"))
        bob = mem.remember("Bob likes coffee", scope("bob", "planner"))

        # A user's scope covers all her agents and runs (and nobody else's, not even a name it is a prefix of).
        hits = mem.recall("what does Alice like?", scope("alice"), k=10, descendants=True)
        assert {h.memory.namespace for h in hits} == {planner, run, coach}
        assert mem.recall("what does Alice like?", scope("alice"), k=10) == []  # the user scope itself is empty
        assert mem.count(scope("alice"), descendants=True) == 3 and mem.count(planner, descendants=True) == 2
        assert mem.count(planner) == 1 and mem.count("user=al", descendants=True) == 0
        assert [r.namespace for r in mem.recent(planner, descendants=True)] == [run, planner]

        # Pages: limit and offset, and every memory exactly once when walking all pages.
        notes = mem.remember_many([f"note {i}" for i in range(25)], "pages")
        assert len(mem.recent("pages", limit=10)) == 10 and len(mem.recent("pages", limit=10, offset=20)) == 5
        walked = [r.id for r in mem.all("pages", page_size=7)]
        assert len(walked) == 25 and set(walked) == set(notes)
        for bad in ({"limit": 0}, {"limit": 10_001}, {"offset": -1}):
            with pytest.raises(marrow.InvalidArgumentError):
                mem.recent("pages", **bad)

        # delete_all: the scope and below, history kept with a delete event each.
        events = db.scalar("SELECT count(*) FROM memory_events")
        assert mem.delete_all(scope("alice"), descendants=True) == 3
        assert mem.count(scope("alice"), descendants=True) == 0 and mem.get(bob).content == "Bob likes coffee"
        assert mem.count(scope("alicia"), descendants=True) == 1
        deleted = db.sql("SELECT memory_id, old_content FROM memory_events WHERE operation = 'delete'").to_pylist()
        assert len(deleted) == 3 and "Alice likes green tea" in {r["old_content"] for r in deleted}
        assert db.scalar("SELECT count(*) FROM memory_events") == events + 3
        assert mem.delete_all("nobody") == 0

        for bad_scope in (lambda: scope(), lambda: scope("a/b"), lambda: scope("alice", "")):
            with pytest.raises(marrow.InvalidArgumentError):
                bad_scope()
        with pytest.raises(marrow.InvalidArgumentError):
            mem.remember("x", "alice//planner")


def test_update_patches_metadata_unless_told_to_replace(server):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        mid = mem.remember("Alice's flight is at 9", "u", metadata={"source": "email", "confirmed": False})
        assert mem.update(mid, metadata={"confirmed": True, "gate": "B4"}).metadata == {
            "source": "email",
            "confirmed": True,
            "gate": "B4",
        }
        assert mem.update(mid, metadata={"gate": None}).metadata == {"source": "email", "confirmed": True}
        assert mem.update(mid, metadata={"source": "sms"}, replace_metadata=True).metadata == {"source": "sms"}
        changes = [e.details.get("metadata") for e in mem.history(mid) if e.operation == "update"]
        assert changes[0] == {
            "old": {"source": "email", "confirmed": False},
            "new": {"source": "email", "confirmed": True, "gate": "B4"},
        }


def test_no_silent_null_embeddings(serve):
    server = serve(model=False)
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        with pytest.raises(marrow.FailedPreconditionError, match="cannot embed"):
            mem.remember("a memory without a vector", "u")
        with pytest.raises(marrow.FailedPreconditionError):
            mem.remember_many(["one", {"content": "two", "embedding": [1.0] + [0.0] * 383}], "u")
        assert mem.count("u") == 0  # nothing of the batch was written
        vector = [1.0] + [0.0] * 383
        mid = mem.remember("with its own vector", "u", embedding=vector)
        # A row written by plain SQL on this server has no embedding: a vector recall ranks it last, no TypeError.
        db.execute("INSERT INTO memories (id, namespace, content) VALUES ('by-sql', 'u', 'written by SQL')")
        hits = mem.recall(None, "u", k=5, embedding=vector)
        assert [h.id for h in hits] == [mid, "by-sql"] and hits[1].distance == math.inf


CONTRADICTIONS = [
    ("Alice's dentist appointment is on Monday", "Alice's dentist appointment is on Tuesday", "contradiction"),
    ("Bob likes sushi", "Bob dislikes sushi", "contradiction"),
    ("Carol is vegetarian", "Carol is not vegetarian", "contradiction"),
    ("Dan's dog is called Biscuit", "Dan's dog is named Biscuit", "duplicate"),
]


def test_consolidation_keeps_the_newer_fact_and_the_whole_history(server):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        older, newer = {}, {}
        for old, _new, _ in CONTRADICTIONS:
            older[old] = mem.remember(old, "c")
        for _old, new, _ in CONTRADICTIONS:  # written later: the newer facts
            newer[new] = mem.remember(new, "c")
        violin = mem.remember("Eve plays the violin", "c")
        piano = mem.remember("Eve plays the piano", "c")  # related, not close enough to be one fact

        before = (mem.count("c"), db.scalar("SELECT count(*) FROM memory_events"), versions(db, "memories"))
        plan = mem.consolidate("c", dry_run=True)
        assert (mem.count("c"), db.scalar("SELECT count(*) FROM memory_events"), versions(db, "memories")) == before
        expected = {(newer[new], older[old], relation) for old, new, relation in CONTRADICTIONS}
        assert {(m.kept, m.merged, m.relation) for m in plan} == expected

        # A judge that knows better: nothing here is the same fact.
        assert mem.consolidate("c", judge=lambda a, b: "distinct") == []
        with pytest.raises(marrow.InvalidArgumentError, match="maybe"):
            mem.consolidate("c", judge=lambda a, b: "maybe")
        assert versions(db, "memories") == before[2]

        merges = mem.consolidate("c")
        assert {(m.kept, m.merged, m.relation) for m in merges} == expected
        # One run: one update of the keepers and one delete, whatever the number of merges.
        assert versions(db, "memories") == before[2] + 2
        remaining = {r.content for r in mem.recent("c")}
        assert remaining == {new for _, new, _ in CONTRADICTIONS} | {"Eve plays the violin", "Eve plays the piano"}
        assert {violin, piano} <= {r.id for r in mem.recent("c")}
        old_id = older["Bob likes sushi"]
        assert [e.operation for e in mem.history(old_id)] == ["add", "superseded_by"]
        kept = mem.history(newer["Bob dislikes sushi"])
        assert [(e.operation, e.old_content) for e in kept][-1] == ("merge", "Bob likes sushi")
        assert mem.get(newer["Bob dislikes sushi"]).metadata["merged_from"] == [old_id]
        assert [e.operation for e in mem.history(older["Dan's dog is called Biscuit"])] == ["add", "merged_into"]
        assert mem.consolidate("c") == []


def _adapter_scope(mem: Memory, cond: MemoryConditioner) -> tuple[list[str], dict[str, str]]:
    """A scope of 40 memories and 24 questions, each with one helpful memory recorded as feedback."""
    pairs = [
        (c, t)
        for c in ("red", "blue", "green", "yellow", "white")
        for t in ("screws", "nails", "bolts", "washers", "hinges", "brackets", "clips", "pins")
    ]
    ids = mem.remember_many([f"The {c} box on shelf {i % 7} holds {t}" for i, (c, t) in enumerate(pairs)], "shop")
    questions = {f"where do I find the {t} in the {c} box?": ids[i] for i, (c, t) in enumerate(pairs) if i % 5 != 4}
    questions = dict(list(questions.items())[:24])
    for q, mid in questions.items():
        cond.feedback("shop", q, {mid: True})
    return ids, questions


def test_query_adapter_trains_stores_applies_and_exports(model_server):
    server, _imports, exports = model_server
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        cond = MemoryConditioner(mem)
        with pytest.raises(marrow.FailedPreconditionError, match="no embedded memories"):
            train_query_adapter(mem, "shop")
        _ids, questions = _adapter_scope(mem, cond)
        qa = train_query_adapter(mem, "shop", steps=100)
        assert qa.id == "qa.shop.v1" and qa.a.shape == (16, 384) and qa.b.shape == (384, 16)
        assert qa.metrics["queries"] == 24 and qa.metrics["train_r5_after"] >= qa.metrics["train_r5_before"]
        assert {"holdout_r5_before", "holdout_r5_after", "training_data_hash", "seconds"} <= set(qa.metrics)
        row = db.sql("SELECT kind, rank, base_model, metrics FROM adapters WHERE id = $1", [qa.id]).to_pylist()[0]
        assert (row["kind"], row["rank"]) == (QUERY_ADAPTER_KIND, 16)
        assert json.loads(row["metrics"])["scope"] == "shop"

        # Stored and read back bit for bit; a second training is version 2.
        loaded = latest_query_adapter(mem, "shop")
        assert loaded is not None and np.array_equal(loaded.a, qa.a) and np.array_equal(loaded.b, qa.b)
        assert train_query_adapter(mem, "shop", steps=10).version == 2
        assert latest_query_adapter(mem, "other-scope") is None

        # Applied on the server: apply_lora gives what numpy gives, and a recall through it ranks by it.
        question = next(iter(questions))
        raw = np.asarray(mem.query_vector(question), np.float32)
        server_side = np.asarray(db.scalar(f"SELECT {qa.sql('embed($1)')}", [question]), np.float32)
        assert np.allclose(server_side, qa.apply(raw), atol=1e-5)
        adapted = mem.recall(question, "shop", k=5, mode="vector", adapter=qa)
        # The reference ranks by the server's own adapted vector: numpy's differs in the last bits, which may swap
        # near-ties on another CPU's kernels.
        by_vector = mem.recall(None, "shop", k=5, embedding=server_side.tolist())
        assert [h.id for h in adapted] == [h.id for h in by_vector]
        assert mem.recall(question, "shop", k=5, adapter=qa)  # hybrid: the vector side adapted

        # Exported as a PEFT adapter like any other.
        db.execute(f"CALL export_peft('{qa.id}', 'qa-shop')")
        config = json.loads((exports / "qa-shop" / "adapter_config.json").read_text())
        assert (config["r"], config["target_modules"], config["peft_type"]) == (16, ["query_embedding"], "LORA")
        tensors = load_file(exports / "qa-shop" / "adapter_model.safetensors")
        assert np.array_equal(tensors["base_model.model.query_embedding.lora_A.weight"], qa.a)
        assert np.array_equal(tensors["base_model.model.query_embedding.lora_B.weight"], qa.b)


def test_router_trains_at_l3_and_applies_at_l2(server):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        cond = MemoryConditioner(mem)
        router = EvolutionRouter(mem, conditioner=cond, thresholds_ttl=0)
        _adapter_scope(mem, cond)
        # Everything above "certain" escalates: no level-0/1 thresholds.
        router.set_thresholds("shop", Thresholds(l0_max_uncertainty=0.0, l1_max_uncertainty=0.0))
        task = "List the box for each fastener"
        d3 = router.route(task, "shop")
        assert (d3.level, d3.action) == (3, "request_adapter")
        assert db.scalar("SELECT status FROM training_jobs WHERE id = $1", [d3.job_id]) == "requested"
        m = router.maintain("shop")
        assert m.training_note is None, m.training_note
        assert m.trained == ["qa.shop.v1"] and m.training_note is None
        assert db.scalar("SELECT status FROM training_jobs WHERE id = $1", [d3.job_id]) == "done"
        metrics = json.loads(db.scalar("SELECT metrics FROM adapters WHERE id = 'qa.shop.v1'"))
        assert metrics["jobs"] == [d3.job_id]
        assert {"memory_feedback", "router_decisions", "training_jobs", "adapters"} <= set(m.compacted)

        # Now the namespace has an adapter that measured a gain on held-out questions: L2 retrieves with it.
        if metrics["holdout_r5_after"] > metrics["holdout_r5_before"]:
            d2 = router.route(task, "shop")
            assert (d2.level, d2.action) == (2, "apply_adapter")
            assert d2.query_adapter is not None and d2.adapter is not None and d2.adapter.name == "qa.shop.v1"
        # A question nothing in memory is about is a missing fact, whatever the adapters.
        missing = router.route("What is the name of Alice's cat?", "shop")
        assert (missing.level, missing.action) == (1, "ask_or_remember")


def test_router_learns_from_every_level(server):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        router = EvolutionRouter(mem, thresholds_ttl=0)
        mem.remember_many(["The user lives in Lisbon", "The user's favourite colour is blue"], "agent")
        router.set_thresholds("agent", Thresholds(l0_max_uncertainty=0.0, l1_max_uncertainty=0.0))
        d3 = router.route("Write a limerick about the user's city", "agent")
        ask = router.route("What is the name of the user's dentist?", "agent")
        assert (d3.level, ask.action) == (3, "ask_or_remember")
        # Escalated tasks that succeed anyway show t1 is too strict; the ask outcome moves nothing.
        for _ in range(10):
            router.record_outcome(d3.id, success=True)
        for _ in range(10):
            router.record_outcome(ask.id, success=False)
        t = router.learn("agent")
        assert t.l1_max_uncertainty == pytest.approx(0.1 * (0.2 - (0 + 0.2 * 5) / (10 + 5)))
        assert t.l0_max_uncertainty == 0.0
        # Escalations that fail do not tighten t1.
        for _ in range(10):
            router.record_outcome(d3.id, success=False)
        assert router.learn("agent").l1_max_uncertainty == pytest.approx(t.l1_max_uncertainty)
        with pytest.raises(marrow.NotFoundError):
            router.record_outcome("no-such-decision", True)


def test_route_costs_at_most_two_round_trips(server):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        # The caches' lifetimes well beyond the test's duration, however slow the machine.
        router = EvolutionRouter(mem, conditioner=MemoryConditioner(mem, weights_ttl=600), thresholds_ttl=600)
        mem.remember_many(["The user lives in Lisbon", "The user's favourite colour is blue"], "agent")
        router.route("Where does the user live?", "agent")  # reads thresholds and weights, checks maintenance
        calls: list[str] = []
        for name in ("sql", "execute", "scalar", "ingest"):
            original = getattr(db, name)

            def counting(*args, _original=original, _name=name, **kwargs):
                calls.append(_name)
                return _original(*args, **kwargs)

            setattr(db, name, counting)
        for _ in range(5):
            calls.clear()
            router.route("Where does the user live?", "agent")
            assert len(calls) <= 2, calls
        router.close()
        assert db.scalar("SELECT count(*) FROM router_decisions") == 6


def test_agent_loop_example_runs_twice_on_the_same_data(export_server):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "examples" / "agent_loop.py"
    for run in range(2):
        done = subprocess.run(
            [sys.executable, str(script), "--uri", export_server.uri, "--export-root", str(export_server.export_root)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"run {run + 1}:\n{done.stdout}\n{done.stderr}"
        assert "[L4] trained ['qa.story-" in done.stdout and "replaces" in done.stdout


def test_the_conditioner_learns_per_memory_and_ranks_relevance_first(server):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        cond = MemoryConditioner(mem, weights_ttl=0)
        ids = mem.remember_many(
            [
                {"content": "Bob's dog is called Biscuit", "importance": 1.0},
                "Bob likes spicy Thai food",
                "Bob cooks pasta on Sundays",
                "Bob's favourite dessert is tiramisu",
                "Bob drinks green tea",
                "Bob lives in Leeds",
                "Bob works as a nurse",
                "Bob plays the guitar",
            ],
            "bob",
        )
        # Defaults: relevance first; the important but unrelated memory does not lead a food question.
        ctx = cond.condition("What food does Bob like?", "bob", k=8, log_access=False)
        assert ctx.items[0].id != ids[0] and ctx.items[0].relevance == 1.0
        ranks = [i.id for i in ctx.items]
        target = ranks[-2]
        # Five thumbs-up for one memory: its own feature rises to 5/7 and it moves up.
        for q in ("What does Bob eat?", "Bob's meals?", "food for Bob", "Bob's diet", "what Bob likes to eat"):
            cond.feedback("bob", q, {target: True})
        after = cond.condition("What food does Bob like?", "bob", k=8, log_access=False)
        moved = next(i for i in after.items if i.id == target)
        assert moved.feedback == pytest.approx(5 / 7)
        assert [i.id for i in after.items].index(target) < ranks.index(target)
