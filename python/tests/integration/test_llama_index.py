"""`marrow.llama_index` through LlamaIndex's public interfaces against the real binary: the vector store under a
`VectorStoreIndex` (insert, retrieve, metadata filters, delete by document), and the memory block inside
`llama_index.core.memory.Memory`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from llama_index.core import Document, MockEmbedding, Settings, StorageContext, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.memory import Memory as LlamaMemory
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

import marrow
from marrow import InvalidArgumentError, Memory
from marrow.llama_index import MarrowMemoryBlock, MarrowVectorStore


@pytest.fixture
def db(server) -> Iterator[marrow.Client]:
    with marrow.connect(server.uri) as c:
        yield c


def _node(i: int, text: str, vector: list[float], **meta: object) -> TextNode:
    return TextNode(id_=f"n{i}", text=text, embedding=vector, metadata=dict(meta))


def test_vector_store_add_query_filters_delete(db) -> None:
    store = MarrowVectorStore(db, "li_nodes")
    nodes = [
        _node(1, "tea", [1.0, 0.0, 0.0], lang="en", year=2020, tags=["drink"]),
        _node(2, "coffee", [0.9, 0.1, 0.0], lang="en", year=2022, tags=["drink", "hot"]),
        _node(3, "Lyon", [0.0, 1.0, 0.0], lang="fr", year=2021),
        _node(4, "rain", [0.0, 0.0, 1.0], lang="fr", year=2023),
    ]
    assert store.add(nodes) == ["n1", "n2", "n3", "n4"]
    result = store.query(VectorStoreQuery(query_embedding=[1.0, 0.0, 0.0], similarity_top_k=2))
    assert result.ids == ["n1", "n2"]
    assert result.similarities is not None and result.similarities[0] == pytest.approx(1.0, abs=1e-6)
    assert result.nodes is not None and result.nodes[0].get_content() == "tea"
    assert result.nodes[0].metadata["year"] == 2020

    def ids(filters: MetadataFilters, k: int = 10) -> list[str]:
        q = VectorStoreQuery(query_embedding=[1.0, 0.0, 0.0], similarity_top_k=k, filters=filters)
        return sorted(store.query(q).ids or [])

    assert ids(MetadataFilters(filters=[MetadataFilter(key="lang", value="fr")])) == ["n3", "n4"]
    assert ids(MetadataFilters(filters=[MetadataFilter(key="year", value=2021, operator=FilterOperator.GTE)])) == [
        "n2",
        "n3",
        "n4",
    ]
    assert ids(
        MetadataFilters(filters=[MetadataFilter(key="lang", value=["de", "en"], operator=FilterOperator.IN)])
    ) == [
        "n1",
        "n2",
    ]
    assert ids(
        MetadataFilters(filters=[MetadataFilter(key="tags", value="hot", operator=FilterOperator.CONTAINS)])
    ) == ["n2"]
    either = MetadataFilters(
        filters=[MetadataFilter(key="year", value=2020), MetadataFilter(key="year", value=2023)],
        condition=FilterCondition.OR,
    )
    assert ids(either) == ["n1", "n4"]
    nested = MetadataFilters(
        filters=[
            MetadataFilter(key="lang", value="en"),
            MetadataFilters(filters=[MetadataFilter(key="year", value=2022)]),
        ]
    )
    assert ids(nested) == ["n2"]
    with pytest.raises(InvalidArgumentError, match="not supported"):
        ids(MetadataFilters(filters=[MetadataFilter(key="tags", value=["a"], operator=FilterOperator.ALL)]))
    assert {n.node_id for n in store.get_nodes(node_ids=["n3", "n1"])} == {"n1", "n3"}
    store.delete_nodes(node_ids=["n1"])
    assert store.query(VectorStoreQuery(query_embedding=[1.0, 0.0, 0.0], similarity_top_k=1)).ids == ["n2"]
    store.clear()
    assert store.query(VectorStoreQuery(query_embedding=[1.0, 0.0, 0.0], similarity_top_k=1)).ids == []


def test_under_a_vector_store_index(db) -> None:
    Settings.embed_model = MockEmbedding(embed_dim=8)
    store = MarrowVectorStore(db, "li_index")
    index = VectorStoreIndex.from_documents(
        [Document(text="Ada prefers tea.", doc_id="a"), Document(text="Bob likes rain.", doc_id="b")],
        storage_context=StorageContext.from_defaults(vector_store=store),
    )
    found = index.as_retriever(similarity_top_k=5).retrieve("anything")
    assert {n.node.get_content() for n in found} == {"Ada prefers tea.", "Bob likes rain."}
    assert {n.node.ref_doc_id for n in found} == {"a", "b"}
    index.delete_ref_doc("a")
    found = index.as_retriever(similarity_top_k=5).retrieve("anything")
    assert [n.node.get_content() for n in found] == ["Bob likes rain."]
    with pytest.raises(InvalidArgumentError, match="8-dimensional"):
        store.add([_node(9, "x", [1.0, 2.0])])


def test_memory_block_remembers_and_recalls(db) -> None:
    mem = Memory(db)
    block = MarrowMemoryBlock(mem, namespace="li-ada", k=2)

    async def go() -> str:
        await block.aput(
            [
                ChatMessage(role="user", content="I only drink green tea."),
                ChatMessage(role="assistant", content="Noted!"),
                ChatMessage(role="user", content="I moved to Lyon last year."),
            ]
        )
        return await block.aget([ChatMessage(role="user", content="What should I order to drink?")])

    text = asyncio.run(go())
    assert text.splitlines()[0] == "- I only drink green tea."
    assert mem.count("li-ada") == 2  # the assistant's message is not a memory of the user
    # Inside LlamaIndex's Memory, as a long-term block.
    memory = LlamaMemory.from_defaults(session_id="s1", token_limit=2000, memory_blocks=[block])
    assert memory.memory_blocks[0] is block
