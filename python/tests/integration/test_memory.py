"""The memory API against the real server: remember / recall / get / update / forget / history / consolidate /
maintain, and bad input that must write nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import marrow
from marrow import Memory

FACTS = [
    "Alice drinks green tea every morning",
    "Alice's cat is called Miso",
    "Alice works as a pastry chef in Lyon",
    "Alice is learning to play the cello",
    "Alice is allergic to peanuts",
]


def counts(db: marrow.Client) -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        db.scalar(f"SELECT count(*) FROM {t}") for t in ("memories", "memory_events", "memory_access_log")
    )


def versions(db: marrow.Client, table: str) -> int:
    return int(db.scalar(f"SELECT max(version) FROM marrow_versions('{table}')"))


def test_remember_get_recall_update_history(server):
    with marrow.connect(server.uri) as db:
        mem = Memory(db, actor="tester")
        assert mem.dimension == 384
        ids = mem.remember_many(FACTS, namespace="alice")
        other = mem.remember("Bob drinks green tea too", "bob", kind="fact", importance=0.9, metadata={"src": "chat"})
        assert len(ids) == 5 and len(set(ids)) == 5
        assert mem.count("alice") == 5 and mem.count("bob") == 1

        got = mem.get(other)
        assert (got.namespace, got.kind, got.content, got.metadata) == (
            "bob",
            "fact",
            "Bob drinks green tea too",
            {"src": "chat"},
        )
        assert got.importance == pytest.approx(0.9) and got.access_count == 0 and got.last_accessed_at is None

        hits = mem.recall("what does Alice drink in the morning?", "alice", k=3)
        assert [h.content for h in hits][0] == FACTS[0]
        assert all(h.memory.namespace == "alice" for h in hits)  # the namespace is a filter: Bob's tea is not here
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)
        assert 0 < hits[0].similarity <= 1

        # Filters: kind, id lists, importance ranges.
        mem.remember("Alice prefers oolong over green tea", "alice", kind="preference", importance=0.8)
        prefs = mem.recall("tea", "alice", k=5, filters={"kind": "preference"})
        assert [h.content for h in prefs] == ["Alice prefers oolong over green tea"]
        assert [h.id for h in mem.recall("tea", "alice", k=5, filters={"id": [ids[1], ids[2]]})] != []
        assert {h.id for h in mem.recall("tea", "alice", k=9, filters={"id": [ids[1], ids[2]]})} == {ids[1], ids[2]}
        assert all(h.memory.importance >= 0.7 for h in mem.recall("tea", "alice", 9, {"min_importance": 0.7}))
        # A precomputed vector finds the same memory as the text.
        vec = mem.query_vector("what does Alice drink in the morning?")
        assert mem.recall(None, "alice", k=1, embedding=vec)[0].id == hits[0].id

        updated = mem.update(ids[4], content="Alice is severely allergic to peanuts", importance=1.0)
        assert updated.content == "Alice is severely allergic to peanuts" and updated.importance == 1.0
        assert updated.updated_at is not None and updated.updated_at > updated.created_at
        # The new content was re-embedded: it's what a query about allergies finds now.
        assert mem.recall("severe allergy", "alice", k=1)[0].id == ids[4]
        history = mem.history(ids[4])
        assert [(e.operation, e.old_content, e.new_content, e.actor) for e in history] == [
            ("add", None, FACTS[4], "tester"),
            ("update", FACTS[4], "Alice is severely allergic to peanuts", "tester"),
        ]
        assert history[1].details["importance"]["new"] == 1.0
        assert history[0].at <= history[1].at


def test_recall_only_appends_to_the_access_log_and_maintain_folds_it(server):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        ids = mem.remember_many(FACTS, namespace="alice")
        before = versions(db, "memories")
        for _ in range(3):
            mem.recall("what is the cat's name?", "alice", k=2)
        # Reads created no version of memories and changed no row; the log has one row per hit.
        assert versions(db, "memories") == before
        assert db.scalar("SELECT sum(access_count) FROM memories") == 0
        # The log is written in the background (recall does not wait for it); flushing waits for it.
        assert mem.flush_access_log() == 6
        assert db.scalar("SELECT count(*) FROM memory_access_log") == 6
        cat = ids[1]
        assert db.scalar("SELECT count(*) FROM memory_access_log WHERE memory_id = $1 AND rank = 1", [cat]) == 3
        mem.recall("cello", "alice", k=1, log_access=False)
        assert db.scalar("SELECT count(*) FROM memory_access_log") == 6

        report = mem.maintain("alice")
        assert report.folded_rows == 6 and report.memories_touched == 2
        assert mem.get(cat).access_count == 3 and mem.get(cat).last_accessed_at is not None
        assert mem.get(ids[3]).access_count == 0 and mem.get(ids[3]).last_accessed_at is None
        assert db.scalar("SELECT count(*) FROM memory_access_log") == 0
        assert mem.maintain("alice") == marrow.MaintenanceReport(0, 0)
        mem.recall("what is the cat's name?", "alice", k=1)
        mem.maintain()
        assert mem.get(cat).access_count == 4


def test_consolidate_merges_near_duplicates_and_records_it(server):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        rng = np.random.default_rng(7)
        base = rng.standard_normal((4, 384)).astype(np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        # a, a' and a'' are near-duplicates (one group via a chain); b, c, d are far from everything.
        jitter = [0.0, 0.02, 0.04]
        items = []
        for j, eps in enumerate(jitter):
            v = base[0] + eps * rng.standard_normal(384).astype(np.float32) / np.sqrt(384)
            items.append(
                {"content": f"dup {j}", "embedding": (v / np.linalg.norm(v)).tolist(), "importance": 0.3 + j / 10}
            )
        for i in range(1, 4):
            items.append({"content": f"distinct {i}", "embedding": base[i].tolist()})
        ids = mem.remember_many(items, namespace="n")
        # The same vector in another namespace must not be merged with n's.
        elsewhere = mem.remember("dup elsewhere", "m", embedding=base[0].tolist())
        mem.recall(None, "n", k=3, embedding=base[0].tolist())  # access-log rows that must follow the keeper

        # The judge says these are the same fact: the newest (written together: the most important) is kept.
        merges = mem.consolidate("n", threshold=0.05, judge=lambda older, newer: "duplicate")
        keeper = ids[2]
        assert {(m.kept, m.merged) for m in merges} == {(keeper, ids[0]), (keeper, ids[1])}
        assert all(m.distance <= 0.05 and m.relation == "duplicate" for m in merges)
        assert mem.count("n") == 4 and mem.count("m") == 1 and mem.get(elsewhere).content == "dup elsewhere"
        kept = mem.get(keeper)
        assert kept.importance == pytest.approx(0.5)
        assert kept.metadata["merged_from"] == sorted([ids[0], ids[1]])
        assert db.scalar("SELECT count(*) FROM memory_access_log WHERE memory_id <> $1", [keeper]) == 0
        ops = [(e.operation, e.related_id) for e in mem.history(keeper)]
        assert ("merge", ids[0]) in ops and ("merge", ids[1]) in ops
        assert [e.operation for e in mem.history(ids[0])] == ["add", "merged_into"]
        with pytest.raises(marrow.NotFoundError):
            mem.get(ids[0])
        # Nothing left to merge; no temporary tables left behind.
        assert mem.consolidate("n", threshold=0.05) == []
        assert (
            db.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '_marrow_consolidate%'")
            == 0
        )


def test_forget_deletes_and_purge_removes_physically(server, tmp_path: Path):
    data_dir = tmp_path / "data"
    secret = "the vault code is 0451-SWORDFISH"
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        keep = mem.remember("an ordinary note", "alice")
        gone = mem.remember(secret, "alice")
        mem.update(gone, importance=0.9)
        mem.recall("vault code", "alice", k=2)
        old_version = versions(db, "memories")

        def on_disk() -> bool:
            return any(secret.encode() in p.read_bytes() for p in data_dir.rglob("*") if p.is_file())

        assert on_disk()
        report = mem.forget(gone)
        assert report.events_deleted == 0 and report.access_rows_deleted == 1 and report.purged == []
        with pytest.raises(marrow.NotFoundError):
            mem.get(gone)
        # The history stays, ending with the deletion and what was deleted.
        history = mem.history(gone)
        assert [e.operation for e in history] == ["add", "update", "delete"] and history[-1].old_content == secret
        # A plain delete is still readable by time travel and on disk…
        assert db.scalar(f"SELECT count(*) FROM memories VERSION AS OF {old_version} WHERE id = $1", [gone]) == 1
        assert on_disk()

        other = mem.remember("another secret: 0452-TROUT", "alice")
        report = mem.forget(other, purge=True)
        assert set(report.purged) >= {"memories", "memory_events", "memory_access_log"}
        # A purge keeps only the fact of the deletion, without the content.
        (purged,) = mem.history(other)
        assert (purged.operation, purged.old_content, purged.details) == ("delete", None, {"purged": True})
        mem.forget(gone, purge=True)  # the earlier delete's history held the secret too
        # …a purge is not: old versions are gone, and so are the bytes (of this and the earlier delete).
        with pytest.raises(marrow.NotFoundError):
            db.sql(f"SELECT count(*) FROM memories VERSION AS OF {old_version}")
        assert not on_disk()
        assert not any(b"0452-TROUT" in p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
        assert mem.get(keep).content == "an ordinary note"


def test_bad_input_is_refused_and_writes_nothing(server):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        ids = mem.remember_many(FACTS[:2], namespace="alice")
        before = counts(db)
        v_before = {t: versions(db, t) for t in ("memories", "memory_events", "memory_access_log")}
        bad_calls = [
            (marrow.InvalidArgumentError, lambda: mem.remember("x", "alice", embedding=[0.1] * 383)),
            (marrow.InvalidArgumentError, lambda: mem.remember("x", "alice", embedding=[float("nan")] * 384)),
            (marrow.InvalidArgumentError, lambda: mem.remember("", "alice")),
            (marrow.InvalidArgumentError, lambda: mem.remember("x", "")),
            (marrow.InvalidArgumentError, lambda: mem.remember("x", "alice", importance=1.5)),
            (marrow.InvalidArgumentError, lambda: mem.remember("x", "alice", metadata={"f": object()})),
            # One bad item in a batch: the good ones are not written either.
            (marrow.InvalidArgumentError, lambda: mem.remember_many(["fine", {"content": "x", "embedding": [1.0]}])),
            (marrow.InvalidArgumentError, lambda: mem.remember_many([{"content": "x", "colour": "red"}])),
            (marrow.InvalidArgumentError, lambda: mem.recall("", "alice")),
            (marrow.InvalidArgumentError, lambda: mem.recall("   ", "alice")),
            (marrow.InvalidArgumentError, lambda: mem.recall("tea", "alice", k=0)),
            (marrow.InvalidArgumentError, lambda: mem.recall(None, "alice", embedding=[0.0] * 12)),
            (marrow.InvalidArgumentError, lambda: mem.recall("tea", "alice", filters={"content": {"like": "x"}})),
            (marrow.InvalidArgumentError, lambda: mem.recall("tea", "alice//bob")),
            (marrow.InvalidArgumentError, lambda: mem.consolidate("alice", judge="yes")),
            (marrow.NotFoundError, lambda: mem.get("no-such-id")),
            (marrow.NotFoundError, lambda: mem.update("no-such-id", content="y")),
            (marrow.InvalidArgumentError, lambda: mem.update(ids[0])),
            (marrow.NotFoundError, lambda: mem.forget("no-such-id", purge=True)),
            (marrow.NotFoundError, lambda: mem.history("no-such-id")),
        ]
        for cls, call in bad_calls:
            with pytest.raises(cls):
                call()
        assert counts(db) == before
        assert {t: versions(db, t) for t in v_before} == v_before
        # A namespace that exists but whose filter matches nothing is an empty answer, not an error; so is one
        # that has no memories (an agent's first recall for a new user).
        assert mem.recall("tea", "alice", filters={"kind": "nothing-of-this-kind"}) == []
        assert mem.recall("tea", "nobody") == [] and mem.consolidate("nobody") == []


def test_recall_modes_keyword_vector_and_hybrid(server):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        assert mem.has_text_index()  # every data directory indexes memories.content
        ids = mem.remember_many(
            [
                "Caroline went to the LGBTQ support group on 7 May 2023",
                "Melanie painted a sunrise over the lake",
                "I love long hikes in the mountains on weekends",
                "Caroline is researching adoption agencies",
                "The weather was rainy all week",
            ],
            namespace="conv",
        )
        mem.remember("Caroline met the LGBTQ group again", "other")
        # A rare word: BM25 finds it where a small embedding model may not rank it first.
        keyword = mem.recall("LGBTQ", "conv", k=2, mode="keyword")
        assert [h.id for h in keyword] == [ids[0]]
        assert keyword[0].rank_score is not None and keyword[0].rank_score > 0
        # A paraphrase with no word in common: the vector side.
        vector = mem.recall("trekking outdoors", "conv", k=1, mode="vector")
        assert [h.id for h in vector] == [ids[2]]
        assert vector[0].rank_score == pytest.approx(1 - vector[0].distance)
        # Hybrid (the default) keeps both kinds of hit, fused by rank.
        hybrid = mem.recall("Caroline LGBTQ trekking outdoors", "conv", k=3)
        assert ids[0] in [h.id for h in hybrid] and ids[2] in [h.id for h in hybrid]
        assert [h.rank_score for h in hybrid] == sorted((h.rank_score for h in hybrid), reverse=True)
        assert all(0 <= h.distance <= 2 for h in hybrid)
        # Filters are a prefilter of every mode.
        for mode in ("keyword", "vector", "hybrid"):
            got = mem.recall("Caroline", "conv", k=5, mode=mode, filters={"id": [ids[3], ids[4]]})
            assert {h.id for h in got} <= {ids[3], ids[4]} and got, mode
        # A query of stop words only finds nothing by keyword; the namespace exists, so no error.
        assert mem.recall("the of and", "conv", k=3, mode="keyword") == []
        with pytest.raises(marrow.InvalidArgumentError):
            mem.recall("x", "conv", mode="fuzzy")
        with pytest.raises(marrow.InvalidArgumentError):
            mem.recall(None, "conv", mode="keyword", embedding=[0.0] * 384)
        with pytest.raises(marrow.InvalidArgumentError):
            mem.recall("   ", "conv", mode="hybrid")
        assert mem.recall("Caroline", "nobody", mode="hybrid") == []
        # Quotes in the query text are data, not SQL.
        assert mem.recall("it's Caroline's '; DROP TABLE memories; --", "conv", k=2, mode="hybrid")
        assert mem.count("conv") == 5


def _filter_fixture(mem: Memory) -> dict[str, str]:
    specs = [
        (
            "a",
            "Caroline booked a flight to Paris",
            "fact",
            0.9,
            {"user": "ada", "turn": 1, "score": -1.5, "vip": True, "tags": ["travel", "Paris"]},
        ),
        (
            "b",
            "Caroline painted the lake at dawn",
            "fact",
            0.4,
            {"user": "grace", "turn": 5, "score": 2.5, "vip": False, "tags": ["art"]},
        ),
        (
            "c",
            "Melanie asked Caroline about adoption",
            "event",
            0.6,
            {"user": "ada", "turn": 9, "place": {"city": "Boston"}},
        ),
        ("d", "Caroline likes rainy weekends", "note", 0.2, {}),
    ]
    return {
        name: mem.remember(content, "filters", kind=kind, importance=imp, metadata=meta)
        for name, content, kind, imp, meta in specs
    }


# mem0's filter language: each operator, on a column and on metadata keys, with the names of the memories it keeps.
FILTER_CASES = [
    ({"kind": "fact"}, "ab"),
    ({"kind": {"ne": "fact"}}, "cd"),
    ({"kind": ["event", "note"]}, "cd"),
    ({"kind": {"in": ["event"]}}, "c"),
    ({"kind": {"nin": ["fact", "event"]}}, "d"),
    ({"importance": {"gt": 0.6}}, "a"),
    ({"importance": {"gte": 0.6}}, "ac"),
    ({"importance": {"lt": 0.4}}, "d"),
    ({"importance": {"lte": 0.4, "gt": 0.3}}, "b"),
    ({"content": {"contains": "lake"}}, "b"),
    ({"content": {"icontains": "MELANIE"}}, "c"),
    ({"user": "ada"}, "ac"),
    ({"user": {"eq": "grace"}}, "b"),
    # A memory without the key is "not grace" (ne and nin are satisfied by a missing key).
    ({"user": {"ne": "grace"}}, "acd"),
    ({"user": {"nin": ["ada"]}}, "bd"),
    ({"turn": {"gt": 1}}, "bc"),
    ({"turn": {"gte": 5, "lte": 9}}, "bc"),
    ({"turn": {"in": [1, 9]}}, "ac"),
    ({"score": {"lt": 0}}, "a"),
    ({"vip": True}, "a"),
    ({"vip": False}, "b"),
    ({"tags": {"contains": "art"}}, "b"),
    ({"tags": {"icontains": "paris"}}, "a"),
    ({"metadata.place.city": "Boston"}, "c"),
    ({"AND": [{"user": "ada"}, {"turn": {"gt": 3}}]}, "c"),
    ({"OR": [{"kind": "note"}, {"turn": {"gte": 9}}]}, "cd"),
    ({"NOT": {"user": "ada"}}, "bd"),
    ({"NOT": [{"kind": "fact"}, {"user": "ada"}]}, "bcd"),
    ({"OR": [{"AND": [{"kind": "fact"}, {"NOT": {"vip": True}}]}, {"kind": "note"}]}, "bd"),
    # Keys no memory has match nothing; that is not an error.
    ({"no_such_key": "x"}, ""),
    ({"no_such_key": {"gt": 3}}, ""),
    ({"min_importance": 0.5, "max_importance": 0.7}, "c"),
]


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_recall_filters_every_operator_in_every_mode(server, mode: str):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        ids = _filter_fixture(mem)
        names = {v: k for k, v in ids.items()}
        for filters, expected in FILTER_CASES:
            # "Caroline" is in every memory, so the keyword side can reach each of them.
            got = mem.recall("Caroline", "filters", k=10, mode=mode, filters=filters, log_access=False)
            assert "".join(sorted(names[h.id] for h in got)) == expected, (mode, filters)


def test_recall_filters_are_pushed_into_the_search(server):
    """The compiled WHERE is a prefilter: EXPLAIN shows it inside the full-text and hybrid searches, and k hits come
    back when only that many memories pass it, however many rank above them."""
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        _filter_fixture(mem)
        for table, node in (
            ("fts_search('memories', 'content', 'Caroline', 3)", "FullTextSearchExec"),
            ("hybrid_search('memories', 'content', 'embedding', 'Caroline', embed('Caroline'), 3)", "HybridSearchExec"),
        ):
            plan = db.sql(f"EXPLAIN SELECT id FROM {table} WHERE metadata->>'user' = 'ada'").column("plan").to_pylist()
            lines = "\n".join(str(p) for p in plan).splitlines()
            search = [line for line in lines if node in line]
            assert search and "json_as_text" in search[0] and "filter=" in search[0], lines
            assert not any("FilterExec" in line for line in lines), lines
        for mode in ("vector", "keyword", "hybrid"):
            hits = mem.recall("Caroline", "filters", k=1, mode=mode, filters={"metadata.place.city": "Boston"})
            assert len(hits) == 1, mode


@pytest.mark.parametrize(
    "filters",
    [
        {"kind": {"like": "f%"}},  # unknown operator
        {"kind": {}},
        {"AND": []},
        {"OR": {"kind": "fact"}},
        {"NOT": []},
        {"kind": {"in": []}},
        {"kind": {"in": ["a", 1]}},  # mixed types
        {"importance": {"gt": "high"}},  # a number column compared with text
        {"tags": {"contains": 3}},
        {"user": None},
        {"": 1},
        {"metadata..x": 1},
        "kind = 'fact'",
    ],
)
def test_bad_filters_are_refused(server, filters):
    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        mem.remember("something", "filters")
        with pytest.raises(marrow.InvalidArgumentError):
            mem.recall("something", "filters", filters=filters)
        assert mem.count("filters") == 1


def test_expiry_hides_memories_and_maintain_deletes_them(server):
    from datetime import datetime, timedelta, timezone

    with marrow.connect(server.uri) as db:
        mem = Memory(db)
        keep = mem.remember("the user lives in Lisbon", "ttl")
        brief = mem.remember("the user is in a meeting until noon", "ttl", ttl=6)  # room for a slow, busy machine
        past = mem.remember(
            "the user was in Porto last week", "ttl", expires_at=datetime.now(timezone.utc) - timedelta(days=1)
        )
        assert mem.get(brief).expires_at is not None and mem.get(keep).expires_at is None
        # Already expired: invisible to recall, get, recent, count and the live_memories view.
        with pytest.raises(marrow.NotFoundError):
            mem.get(past)
        assert mem.get(past, include_expired=True).content.endswith("Porto last week")
        assert {h.id for h in mem.recall("where is the user", "ttl", k=5)} == {keep, brief}
        assert {r.id for r in mem.recent("ttl")} == {keep, brief}
        assert mem.count("ttl") == 2
        live = set(db.sql("SELECT id FROM live_memories WHERE namespace = 'ttl'").column("id").to_pylist())
        assert live == {keep, brief}
        # The table itself still holds it until maintain().
        assert db.scalar("SELECT count(*) FROM memories WHERE namespace = 'ttl'") == 3
        import time

        brief_expiry = mem.get(brief).expires_at
        assert brief_expiry is not None
        time.sleep(max(0.0, (brief_expiry - datetime.now(timezone.utc)).total_seconds()) + 0.1)
        assert [h.id for h in mem.recall("where is the user", "ttl", k=5)] == [keep]
        report = mem.maintain("ttl")
        assert report.expired == 2
        assert db.scalar("SELECT count(*) FROM memories WHERE namespace = 'ttl'") == 1
        # The history keeps the event.
        assert [e.operation for e in mem.history(past)] == ["add", "expire"]
        assert mem.maintain("ttl").expired == 0
        with pytest.raises(marrow.InvalidArgumentError):
            mem.remember("x", "ttl", ttl=-1)
        with pytest.raises(marrow.InvalidArgumentError):
            mem.remember("x", "ttl", ttl=5, expires_at=datetime.now(timezone.utc))
        assert mem.count("ttl") == 1
