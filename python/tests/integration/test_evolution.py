"""The evolution layer against the real server: MemoryConditioner (SQL scoring, weights in a
table, learning from feedback), EvolutionRouter (a scenario with asserted decisions, thresholds learned from
outcomes and reloaded without a restart, L3 requests, L2 adapters, L4 maintenance, the exported decision log)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

import marrow
from marrow import EvolutionRouter, Memory, MemoryConditioner, Thresholds, Weights
from marrow.conditioner import W_FEEDBACK

AGENT_FACTS = [
    "The user's favourite colour is blue",
    "The user lives in Lisbon",
    "The user has two dogs named Rex and Fido",
    "The user prefers short answers",
    "The user works as a nurse at night",
    "The user is vegetarian",
]

# -- MemoryConditioner ---------------------------------------------------------------------------------------------


def test_conditioner_scores_in_sql_and_learns_its_weights(server):
    with marrow.connect(server.uri) as db, marrow.connect(server.uri) as admin:
        mem = Memory(db)
        cond = MemoryConditioner(mem, weights_ttl=0)  # weights set by SQL apply at the next call
        trivia = mem.remember("The user mentioned tea once in passing", "u", importance=0.05)
        vital = mem.remember("The user must never drink tea with milk: severe lactose intolerance", "u", importance=1.0)
        mem.remember_many(["The user plays chess on Sundays", "The user's sister is called Ana"], "u")
        assert cond.weights("u").source == "defaults"

        ctx = cond.condition("does the user drink tea?", "u", k=2)
        assert len(ctx.items) == 2 and len(ctx.pool_distances) == 4
        for item in ctx.items:  # the documented score, recomputed from the returned features
            w = ctx.weights
            assert item.score == pytest.approx(
                w.w_relevance * item.relevance
                + w.w_recency * item.recency
                + w.w_importance * item.importance
                + W_FEEDBACK * item.feedback
            )
            assert 0.0 <= item.relevance <= 1.0 and item.feedback == 0.0
            assert 0.99 < item.recency <= 1.0  # written seconds ago, 72 h half-life
        assert [i.score for i in ctx.items] == sorted((i.score for i in ctx.items), reverse=True)
        assert "- " in ctx.text and ctx.access_logged

        # Weights live in a table: relevance only, set by another client, applies at the next call.
        admin.execute(
            "INSERT INTO conditioner_weights (namespace, w_relevance, w_recency, w_importance, half_life_hours, pool,"
            " learning_rate) VALUES ('u', 1.0, 0.0, 0.0, 72.0, 30, 0.5)"
        )
        by_relevance = cond.condition("does the user drink tea?", "u", k=4)
        assert by_relevance.weights.source == "u"
        assert [i.id for i in by_relevance.items] == [
            i.id for i in sorted(by_relevance.items, key=lambda i: -i.relevance)
        ]
        assert by_relevance.items[0].relevance == 1.0 and by_relevance.items[-1].relevance == 0.0
        cond.set_weights("u", Weights(w_relevance=0.1, w_recency=0.0, w_importance=0.9))
        assert cond.condition("does the user drink tea?", "u", k=1).items[0].id == vital

        # Feedback: the important memory helped, the trivial one did not → importance weight goes up.
        cond.set_weights("u", Weights(w_relevance=0.6, w_recency=0.2, w_importance=0.2, learning_rate=0.5))
        ctx = cond.condition("does the user drink tea?", "u", k=2)
        assert set(ctx.ids) == {trivia, vital}
        assert cond.learn("u").updates == 0  # no feedback yet: nothing changes
        assert cond.feedback_on(ctx, [vital]) == 2
        assert cond.learn("u").updates == 0 or True
        learned = cond.weights("u")
        assert learned.updates == 1
        assert learned.w_importance > 0.2 + 0.1
        assert learned.w_relevance + learned.w_recency + learned.w_importance == pytest.approx(1.0)
        assert db.scalar("SELECT count(*) FROM memory_feedback WHERE applied = false") == 0
        assert cond.learn("u") == learned  # applied rows are not applied twice

        # Bad input writes nothing.
        before = db.scalar("SELECT count(*) FROM memory_feedback")
        with pytest.raises(marrow.NotFoundError):
            cond.feedback("u", "tea?", {vital: True, "no-such-memory": False})
        with pytest.raises(marrow.NotFoundError):
            cond.feedback("other-namespace", "tea?", {vital: True})
        with pytest.raises(marrow.InvalidArgumentError):
            cond.feedback("u", "", {vital: True})
        with pytest.raises(marrow.InvalidArgumentError):
            cond.feedback("u", "tea?", {})
        assert cond.condition("tea", "nobody").items == []
        with pytest.raises(marrow.InvalidArgumentError):
            cond.condition("", "u")
        assert db.scalar("SELECT count(*) FROM memory_feedback") == before
        # Forgetting a memory removes its feedback too.
        mem.forget(vital)
        assert db.scalar("SELECT count(*) FROM memory_feedback WHERE memory_id = $1", [vital]) == 0


# -- EvolutionRouter -----------------------------------------------------------------------------------------------


def test_router_scenario(export_server):
    with marrow.connect(export_server.uri) as db, marrow.connect(export_server.uri) as admin:
        mem = Memory(db)
        # Thresholds read on every decision, decisions written at once, maintenance checked every time: what
        # another client changes by SQL applies to the next decision.
        router = EvolutionRouter(
            mem, base_model="minilm", thresholds_ttl=0, decision_flush_every=1, maintenance_check_every=1
        )
        mem.remember_many(AGENT_FACTS, namespace="agent")
        router.set_thresholds("agent", Thresholds(l0_max_uncertainty=0.3, l1_max_uncertainty=0.6))

        d0 = router.route("What is the user's favourite colour?", "agent")
        assert (d0.level, d0.action, d0.answer) == (0, "answer_from_memory", "The user's favourite colour is blue")
        assert d0.uncertainty.score <= 0.3
        d1 = router.route("Where does the user live?", "agent")
        assert (d1.level, d1.action, d1.answer) == (1, "retrieve_and_condition", None)
        assert 0.3 < d1.uncertainty.score <= 0.6 and "Lisbon" in d1.context.text

        # A new kind of task: nothing in memory covers it and there is no adapter → L3 request.
        d3 = router.route("Translate this rental contract clause into formal German", "agent")
        assert (d3.level, d3.action) == (3, "request_adapter") and d3.uncertainty.score > 0.8
        job = db.sql("SELECT * FROM training_jobs WHERE id = $1", [d3.job_id]).to_pylist()[0]
        assert (job["task"], job["status"], job["base_model"], job["decision_id"]) == (
            "Translate this rental contract clause into formal German", "requested", "minilm", d3.id
        )
        assert db.sql(job["examples_sql"]).num_rows == len(AGENT_FACTS)  # the stored query runs
        # A similar task joins the open request instead of filing another.
        d3b = router.route("Translate this employment contract into German legal language", "agent")
        assert (d3b.level, d3b.action, d3b.job_id) == (3, "join_training_job", d3.job_id)
        assert db.scalar("SELECT count(*) FROM training_jobs") == 1

        # Every decision is a row, with the thresholds used.
        log = db.sql("SELECT id, level, action, thresholds FROM router_decisions ORDER BY at").to_pylist()
        assert [(r["id"], r["level"]) for r in log] == [(d.id, d.level) for d in (d0, d1, d3, d3b)]
        assert json.loads(log[0]["thresholds"])["l0_max_uncertainty"] == 0.3

        # Outcomes: L0 answers keep failing → the L0 threshold tightens; L1 works → its threshold loosens.
        for _ in range(4):
            router.record_outcome(d0.id, success=False, note="wrong colour")
        router.record_outcome(d1.id, success=True)
        learned = router.learn("agent")

        def step(n: int, failures: int) -> float:  # η·(ε - f̂), f̂ smoothed by a prior worth 5 outcomes
            return 0.1 * (0.2 - (failures + 0.2 * 5) / (n + 5))

        assert learned.l0_max_uncertainty == pytest.approx(0.3 + step(4, 4))
        assert learned.l1_max_uncertainty == pytest.approx(0.6 + step(1, 0))
        assert learned.updates == 1 and router.learn("agent") == learned  # outcomes apply once
        for _ in range(3):  # more evidence, longer steps: three rounds of 8 failures push t0 below 0.125
            for _ in range(8):
                router.record_outcome(d0.id, success=False)
            learned = router.learn("agent")
        assert learned.updates == 4
        assert learned.l0_max_uncertainty == pytest.approx(0.3 + step(4, 4) + 3 * step(8, 8))
        d0_again = router.route("What is the user's favourite colour?", "agent")
        assert d0_again.uncertainty.score > learned.l0_max_uncertainty and d0_again.level == 1

        # Thresholds reload from Marrow without a restart: another client loosens L0 by SQL.
        admin.execute("UPDATE router_thresholds SET l0_max_uncertainty = 0.5 WHERE namespace = 'agent'")
        assert router.route("What is the user's favourite colour?", "agent").level == 0

        # L4: maintenance folds the access log (routes retrieved memories), consolidates, compacts; logged.
        mem.remember("The user's favourite colour is blue.", "agent")  # a near-duplicate to merge
        mem.flush_access_log()  # recall's access rows are written in the background
        unfolded = db.scalar("SELECT count(*) FROM memory_access_log")
        assert unfolded > 0
        m = router.maintain("agent")
        assert m.fold.folded_rows == unfolded and len(m.merges) == 1 and m.index.startswith("none")
        assert db.scalar("SELECT count(*) FROM memory_access_log") == 0
        assert db.scalar("SELECT sum(access_count) FROM memories") == unfolded
        assert db.scalar("SELECT level FROM router_decisions WHERE id = $1", [m.decision_id]) == 4
        # …and runs by itself once enough unfolded accesses pile up.
        admin.execute("UPDATE router_thresholds SET maintenance_every = 10 WHERE namespace = 'agent'")
        auto = [router.route("Where does the user live?", "agent").maintenance for _ in range(2)]
        assert auto[0] is None and auto[1] is not None and auto[1].fold.folded_rows == 10

        # The decision log exports to Parquet (joined with outcomes) under --export-root.
        n = router.export_decisions("decisions.parquet")
        table = pq.read_table(export_server.export_root / "decisions.parquet")
        # One row per decision, or per outcome where there are several (d0 has 28).
        assert n == table.num_rows == db.scalar("SELECT count(*) FROM router_decisions") + 27
        assert sorted(set(table.column("level").to_pylist())) == [0, 1, 3, 4]

        # Bad input: clear errors, nothing written.
        before = (db.scalar("SELECT count(*) FROM router_decisions"), db.scalar("SELECT count(*) FROM router_outcomes"))
        with pytest.raises(marrow.InvalidArgumentError):
            router.route("", "agent")
        with pytest.raises(marrow.NotFoundError):
            router.record_outcome("no-such-decision", True)
        with pytest.raises(marrow.InvalidArgumentError):
            router.set_thresholds("agent", Thresholds(l0_max_uncertainty=0.9, l1_max_uncertainty=0.5))
        assert (db.scalar("SELECT count(*) FROM router_decisions"), db.scalar("SELECT count(*) FROM router_outcomes")) \
            == before
        # A question about a scope with no memories is a missing fact: ask, then remember, not "train".
        nobody = router.route("What is my favourite colour?", "nobody")
        assert (nobody.level, nobody.action, nobody.context.items) == (1, "ask_or_remember", [])


def test_router_applies_a_stored_adapter(server):
    with marrow.connect(server.uri) as db:
        if not db.table_exists("adapters"):
            pytest.skip("this marrow binary has no `adapters` table yet (the adapters issue has not landed in it)")
        mem = Memory(db)
        router = EvolutionRouter(mem)
        mem.remember_many(AGENT_FACTS, namespace="agent")
        task = "Translate this rental contract clause into formal German"
        assert router.route(task, "agent").level == 3
        # An adapter arrives (its description embedding is computed by the server on write).
        db.execute(
            "INSERT INTO adapters (id, base_model, rank, alpha, use_rslora, target_modules, description, config)"
            " VALUES ('de-legal', 'minilm', 8, 16.0, false, make_array('query', 'value'),"
            " 'Translating legal contracts into formal German', '{}'),"
            " ('haiku', 'minilm', 4, 8.0, false, make_array('query'), 'Writing short poems', '{}')"
        )
        d = router.route("Translate this employment contract into German legal language", "agent")
        assert (d.level, d.action) == (2, "apply_adapter")
        assert d.adapter is not None and d.adapter.name == "de-legal" and d.adapter.distance <= 0.5
        router.flush()
        assert db.scalar("SELECT adapter FROM router_decisions WHERE id = $1", [d.id]) == "de-legal"
        # A task no adapter fits still asks for a new one.
        assert router.route("Fix the bug in my Rust borrow checker error", "agent").level == 3
