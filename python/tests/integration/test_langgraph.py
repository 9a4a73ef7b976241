"""`marrow.langgraph.MarrowStore` through LangGraph's public `BaseStore` interface (put/get/search/delete/
list_namespaces, batch, async, filters, semantic search), in the patterns of LangGraph's own store tests, against
the real binary."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langgraph.store.base import GetOp, ListNamespacesOp, MatchCondition, PutOp, SearchOp

import marrow
from marrow import InvalidArgumentError
from marrow.langgraph import MarrowStore


@pytest.fixture
def db(server) -> Iterator[marrow.Client]:
    with marrow.connect(server.uri) as c:
        yield c


def test_put_get_delete_and_timestamps(db) -> None:
    store = MarrowStore(db)
    store.put(("users", "ada"), "prefs", {"drink": "tea", "n": 1})
    item = store.get(("users", "ada"), "prefs")
    assert item is not None and item.value == {"drink": "tea", "n": 1}
    assert item.namespace == ("users", "ada") and item.key == "prefs"
    created = item.created_at
    store.put(("users", "ada"), "prefs", {"drink": "coffee", "n": 2})
    again = store.get(("users", "ada"), "prefs")
    assert again is not None and again.value == {"drink": "coffee", "n": 2}
    assert again.created_at == created and again.updated_at >= created
    assert store.get(("users", "bob"), "prefs") is None
    store.delete(("users", "ada"), "prefs")
    assert store.get(("users", "ada"), "prefs") is None


def test_search_prefix_filters_and_paging(db) -> None:
    store = MarrowStore(db)
    for i in range(6):
        store.put(
            ("docs", "team-a" if i % 2 else "team-b"),
            f"d{i}",
            {"i": i, "tag": "odd" if i % 2 else "even", "meta": {"lang": "en" if i < 3 else "fr"}},
        )
    store.put(("other",), "x", {"i": 99})
    assert {r.key for r in store.search(("docs",), limit=10)} == {f"d{i}" for i in range(6)}
    assert {r.key for r in store.search(("docs", "team-a"))} == {"d1", "d3", "d5"}
    # A prefix is whole labels: "doc" is not a prefix of ("docs", …).
    assert store.search(("doc",)) == []
    assert {r.key for r in store.search((), limit=20)} == {f"d{i}" for i in range(6)} | {"x"}
    assert {r.key for r in store.search(("docs",), filter={"tag": "even"})} == {"d0", "d2", "d4"}
    assert {r.key for r in store.search(("docs",), filter={"i": {"$gte": 2, "$lt": 5}})} == {"d2", "d3", "d4"}
    assert {r.key for r in store.search(("docs",), filter={"i": {"$ne": 0}, "tag": "even"})} == {"d2", "d4"}
    assert {r.key for r in store.search(("docs",), filter={"meta": {"lang": "fr"}})} == {"d3", "d4", "d5"}
    assert store.search(("docs",), filter={"missing": "x"}) == []
    page1 = store.search(("docs",), limit=4)
    page2 = store.search(("docs",), limit=4, offset=4)
    assert len(page1) == 4 and len(page2) == 2
    assert {r.key for r in page1 + page2} == {f"d{i}" for i in range(6)}
    with pytest.raises(InvalidArgumentError, match="unknown filter operator"):
        store.search(("docs",), filter={"i": {"$near": 3}})
    with pytest.raises(InvalidArgumentError, match="list values"):
        store.search(("docs",), filter={"i": [1, 2]})


def test_list_namespaces(db) -> None:
    store = MarrowStore(db)
    for ns in [("a", "b", "c"), ("a", "b", "d"), ("a", "e"), ("f", "b"), ("f", "g", "h")]:
        store.put(ns, "k", {"v": 1})
    assert store.list_namespaces() == [("a", "b", "c"), ("a", "b", "d"), ("a", "e"), ("f", "b"), ("f", "g", "h")]
    assert store.list_namespaces(prefix=("a",)) == [("a", "b", "c"), ("a", "b", "d"), ("a", "e")]
    assert store.list_namespaces(suffix=("b",)) == [("f", "b")]
    assert store.list_namespaces(prefix=("a", "*", "c")) == [("a", "b", "c")]
    assert store.list_namespaces(max_depth=2) == [("a", "b"), ("a", "e"), ("f", "b"), ("f", "g")]
    assert store.list_namespaces(limit=2, offset=1) == [("a", "b", "d"), ("a", "e")]
    store.delete(("a", "e"), "k")
    assert ("a", "e") not in store.list_namespaces()


def test_batch_reads_before_writes_and_last_put_wins(db) -> None:
    store = MarrowStore(db)
    store.put(("b",), "k1", {"v": 0})
    results = store.batch(
        [
            GetOp(("b",), "k1"),
            PutOp(("b",), "k1", {"v": 1}),
            PutOp(("b",), "k2", {"v": 2}),
            PutOp(("b",), "k2", {"v": 3}),
            SearchOp(("b",), None, 10, 0),
            ListNamespacesOp((MatchCondition("prefix", ("b",)),), None, 10, 0),
        ]
    )
    assert results[0] is not None and results[0].value == {"v": 0}
    assert results[1] is None and results[2] is None
    assert [r.key for r in results[4]] == ["k1"]
    assert results[5] == [("b",)]
    assert store.get(("b",), "k1").value == {"v": 1}
    assert store.get(("b",), "k2").value == {"v": 3}


def test_semantic_search_server_side(db) -> None:
    store = MarrowStore(db, "lg_semantic", index={"fields": ["text"]})
    store.put(("mem", "ada"), "1", {"text": "Ada prefers green tea", "kind": "preference"})
    store.put(("mem", "ada"), "2", {"text": "Ada moved to Lyon in 2021", "kind": "fact"})
    store.put(("mem", "ada"), "3", {"text": "Ada dislikes coffee", "kind": "preference"})
    store.put(("mem", "ada"), "4", {"text": "tea tea tea", "kind": "noise"}, index=False)
    hits = store.search(("mem",), query="Where does Ada live?", limit=2)
    assert hits[0].key == "2" and hits[0].score is not None and 0 < hits[0].score <= 1
    prefs = store.search(("mem",), query="what does Ada drink?", filter={"kind": "preference"}, limit=5)
    assert {h.key for h in prefs} == {"1", "3"}
    # An item put with index=False is found by filters, never ranked by the query.
    unranked = store.search(("mem",), query="tea", limit=10)
    assert unranked[-1].key == "4" and unranked[-1].score is None
    with pytest.raises(InvalidArgumentError, match="dims 7"):
        MarrowStore(db, "lg_wrong", index={"dims": 7, "fields": ["text"]})


def test_given_embeddings_and_async(db) -> None:
    store = MarrowStore(db, "lg_async", index={"dims": 8, "embed": DeterministicFakeEmbedding(size=8)})

    async def go() -> None:
        await store.aput(("a",), "x", {"text": "alpha"})
        await store.aput(("a",), "y", {"text": "beta"})
        got = await store.aget(("a",), "x")
        assert got is not None and got.value == {"text": "alpha"}
        hits = await store.asearch(("a",), query='{"text": "alpha"}', limit=1)
        assert [h.key for h in hits] == ["x"] and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert await store.alist_namespaces() == [("a",)]
        await store.adelete(("a",), "x")
        assert await store.aget(("a",), "x") is None

    asyncio.run(go())


def test_bad_namespaces_write_nothing(db) -> None:
    store = MarrowStore(db)
    with pytest.raises((InvalidArgumentError, ValueError)):
        store.put((), "k", {"v": 1})
    with pytest.raises((InvalidArgumentError, ValueError)):
        store.put(("a", ""), "k", {"v": 1})
    assert store.search((), limit=10) == []
