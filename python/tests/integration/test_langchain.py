"""`marrow.langchain.MarrowVectorStore` through LangChain's own conformance suite (`langchain-tests`'
`VectorStoreIntegrationTests`, unmodified) against the real binary, plus what the suite does not cover: server-side
embedding, filters, MMR, bad input."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server
from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests

import marrow
from marrow import InvalidArgumentError
from marrow.langchain import MarrowVectorStore


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(Path(tmp_path_factory.mktemp("langchain")) / "data")
    try:
        yield s
    finally:
        s.stop()


class TestMarrowVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, shared_server: Server) -> Iterator[VectorStore]:  # type: ignore[override]
        client = marrow.connect(shared_server.uri)
        store = MarrowVectorStore(client, f"lc_{uuid.uuid4().hex[:12]}", self.get_embeddings())
        try:
            yield store
        finally:
            store.drop()
            client.close()


@pytest.fixture
def db(shared_server: Server) -> Iterator[marrow.Client]:
    with marrow.connect(shared_server.uri) as c:
        yield c


def test_server_side_embedding_filters_and_mmr(db: marrow.Client) -> None:
    store = MarrowVectorStore(db, "lc_server_embed")
    try:
        ids = store.add_texts(
            [
                "Ada prefers tea over coffee",
                "Ada drinks green tea every morning",
                "Bob likes rainy days",
                "Ada moved to Lyon",
            ],
            [
                {"who": "ada", "turn": 1},
                {"who": "ada", "turn": 2},
                {"who": "bob", "turn": 3},
                {"who": "ada", "turn": 4},
            ],
        )
        assert db.scalar("SELECT arrow_typeof(embedding) FROM lc_server_embed LIMIT 1").startswith("FixedSizeList")
        top = store.similarity_search("what does Ada drink?", k=2)
        assert {d.id for d in top} == {ids[0], ids[1]}
        scored = store.similarity_search_with_relevance_scores("tea", k=4)
        assert all(0 <= s <= 1 for _, s in scored) and scored[0][1] >= scored[-1][1]
        only_bob = store.similarity_search("tea", k=4, filter={"who": "bob"})
        assert [d.id for d in only_bob] == [ids[2]]
        late = store.similarity_search("tea", k=4, filter={"AND": [{"who": "ada"}, {"turn": {"gte": 2}}]})
        assert {d.id for d in late} == {ids[1], ids[3]}
        # MMR: the second pick is not the near-duplicate of the first.
        mmr = store.max_marginal_relevance_search("tea", k=2, fetch_k=4, lambda_mult=0.3)
        assert len(mmr) == 2 and {d.id for d in mmr} != {ids[0], ids[1]}
        # Upsert by id, delete by ids.
        store.add_documents([Document(id=ids[3], page_content="Ada moved to Paris", metadata={"who": "ada"})])
        assert store.get_by_ids([ids[3]])[0].page_content == "Ada moved to Paris"
        store.delete([ids[0], ids[1]])
        assert {d.id for d in store.similarity_search("tea", k=10)} == {ids[2], ids[3]}
    finally:
        store.drop()


def test_bad_input_is_a_clear_error_and_writes_nothing(db: marrow.Client) -> None:
    store = MarrowVectorStore(db, "lc_bad")
    try:
        store.add_texts(["kept"], ids=["a"])
        with pytest.raises(InvalidArgumentError, match="unknown filter operator"):
            store.similarity_search("x", filter={"who": {"near": "ada"}})
        with pytest.raises(InvalidArgumentError, match="k must be a positive integer"):
            store.similarity_search("x", k=0)
        with pytest.raises(InvalidArgumentError, match="2 metadatas for 1 texts"):
            store.add_texts(["x"], [{}, {}])
        with pytest.raises(InvalidArgumentError, match="texts must be strings"):
            store.add_texts([b"bytes"])  # type: ignore[list-item]
        # A filter on a key no document has matches nothing; it is not an error.
        assert store.similarity_search("kept", filter={"missing": "x"}) == []
        with pytest.raises(InvalidArgumentError, match="384-dimensional"):
            MarrowVectorStore(db, "lc_bad", TestMarrowVectorStoreStandard.get_embeddings()).add_texts(["y"])
        assert [d.page_content for d in store.similarity_search("kept", k=5)] == ["kept"]
    finally:
        store.drop()
