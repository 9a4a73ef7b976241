"""LlamaIndex on Marrow (``pip install 'marrow[llama-index]'``, llama-index-core 0.14): a vector store and a memory
block.

- :class:`MarrowVectorStore`: ``BasePydanticVectorStore`` on a Marrow table (``id`` = the node id, ``ref_doc_id``,
  ``content``, ``metadata`` JSON holding the node as LlamaIndex serializes it, ``embedding FLOAT[n]``). Nodes keep
  the embeddings LlamaIndex computed; ``MetadataFilters`` (``==, !=, >, >=, <, <=, in, nin, contains, text_match``,
  nested AND/OR) compile to one WHERE clause that prefilters the vector search.
- :class:`MarrowMemoryBlock`: a ``BaseMemoryBlock`` for ``llama_index.core.memory.Memory`` over
  :class:`marrow.Memory`: messages put into it become memories of a namespace; getting it recalls the memories
  most relevant to the latest messages (hybrid search).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any, Optional

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.memory.memory import BaseMemoryBlock
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from ._filters import compile_filters
from ._schema import vector_dimension
from .client import Client, quote_ident
from .errors import InvalidArgumentError
from .memory import Memory

_OPS = {
    FilterOperator.EQ: "eq",
    FilterOperator.NE: "ne",
    FilterOperator.GT: "gt",
    FilterOperator.GTE: "gte",
    FilterOperator.LT: "lt",
    FilterOperator.LTE: "lte",
    FilterOperator.IN: "in",
    FilterOperator.NIN: "nin",
    FilterOperator.CONTAINS: "contains",
    FilterOperator.TEXT_MATCH: "contains",
    FilterOperator.TEXT_MATCH_INSENSITIVE: "icontains",
}
_BATCH = 256


class MarrowVectorStore(BasePydanticVectorStore):
    """LlamaIndex vector store on a Marrow table (see the module's documentation)."""

    stores_text: bool = True
    flat_metadata: bool = False
    table: str = Field(default="llama_index_nodes", description="The Marrow table holding the nodes.")

    _client: Client = PrivateAttr()
    _lock: Any = PrivateAttr()
    _dimension: Optional[int] = PrivateAttr(default=None)

    def __init__(self, client: Client, table: str = "llama_index_nodes", **kwargs: Any) -> None:
        super().__init__(table=table, **kwargs)  # type: ignore[call-arg]  # a pydantic field
        self._client = client
        self._lock = threading.RLock()
        self._dimension = vector_dimension(client, self._table)

    @property
    def client(self) -> Client:
        return self._client

    @property
    def _table(self) -> str:
        return quote_ident(self.table)

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store nodes with their embeddings (a node id that exists is replaced); returns the node ids."""
        if not nodes:
            return []
        vectors = []
        for node in nodes:
            e = node.get_embedding()
            vectors.append([float(x) for x in e])
        dims = {len(v) for v in vectors}
        if len(dims) != 1:
            raise InvalidArgumentError(f"nodes have embeddings of different lengths: {sorted(dims)}")
        dim = dims.pop()
        with self._lock:
            if self._dimension is None:
                self._client.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._table} (id VARCHAR PRIMARY KEY, ref_doc_id VARCHAR,"
                    f" content VARCHAR, metadata VARCHAR, embedding FLOAT[{dim}])"
                )
                self._dimension = vector_dimension(self._client, self._table)
            if dim != self._dimension:
                raise InvalidArgumentError(
                    f"table {self.table} holds {self._dimension}-dimensional embeddings, not {dim}"
                )
            last = {n.node_id: i for i, n in enumerate(nodes)}
            rows = [i for i, n in enumerate(nodes) if last[n.node_id] == i]
            for start in range(0, len(rows), _BATCH):
                params: list[Any] = []
                values = []
                for i in rows[start : start + _BATCH]:
                    node = nodes[i]
                    meta = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
                    params += [node.node_id, node.ref_doc_id, node.get_content(), json.dumps(meta), vectors[i]]
                    values.append("(" + ", ".join(f"${len(params) - k}" for k in (4, 3, 2, 1, 0)) + ")")
                self._client.execute(
                    f"INSERT INTO {self._table} (id, ref_doc_id, content, metadata, embedding) VALUES"
                    f" {', '.join(values)} ON CONFLICT (id) DO UPDATE SET ref_doc_id = excluded.ref_doc_id,"
                    " content = excluded.content, metadata = excluded.metadata, embedding = excluded.embedding",
                    params,
                )
        return [n.node_id for n in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of a source document."""
        with self._lock:
            if self._dimension is not None:
                self._client.execute(f"DELETE FROM {self._table} WHERE ref_doc_id = $1", [ref_doc_id])

    def delete_nodes(
        self,
        node_ids: Optional[list[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        params: list[Any] = []
        where = self._where(node_ids, filters, params)
        with self._lock:
            if self._dimension is not None:
                self._client.execute(f"DELETE FROM {self._table} WHERE {where}", params)

    def clear(self) -> None:
        with self._lock:
            self._client.execute(f"DROP TABLE IF EXISTS {self._table}")
            self._dimension = None

    def get_nodes(
        self,
        node_ids: Optional[list[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **kwargs: Any,
    ) -> list[BaseNode]:
        if self._dimension is None:
            return []
        params: list[Any] = []
        where = self._where(node_ids, filters, params)
        with self._lock:
            rows = self._client.sql(
                f"SELECT id, content, metadata FROM {self._table} WHERE {where}", params
            ).to_pylist()
        return [_node(r) for r in rows]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nearest nodes (cosine) among those passing the filters; similarity =
        1 - distance."""
        if query.query_embedding is None:
            raise InvalidArgumentError("MarrowVectorStore.query needs query_embedding (LlamaIndex's embed model)")
        if self._dimension is None:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        k = int(query.similarity_top_k)
        if k < 1:
            raise InvalidArgumentError(f"similarity_top_k must be at least 1, got {k}")
        params: list[Any] = []
        where = self._where(query.node_ids, query.filters, params, query.doc_ids)
        params.append([float(x) for x in query.query_embedding])
        with self._lock:
            rows = self._client.sql(
                f"SELECT id, content, metadata, cosine_distance(embedding, ${len(params)}) AS _distance"
                f" FROM {self._table} WHERE {where} ORDER BY _distance LIMIT {k}",
                params,
            ).to_pylist()
        return VectorStoreQueryResult(
            nodes=[_node(r) for r in rows],
            similarities=[1.0 - float(r["_distance"]) for r in rows],
            ids=[r["id"] for r in rows],
        )

    def _where(
        self,
        node_ids: Optional[list[str]],
        filters: Optional[MetadataFilters],
        params: list[Any],
        doc_ids: Optional[list[str]] = None,
    ) -> str:
        clauses = ["true"]
        for column, values in (("id", node_ids), ("ref_doc_id", doc_ids)):
            if values:
                marks = []
                for v in values:
                    params.append(v)
                    marks.append(f"${len(params)}")
                clauses.append(f"{column} IN ({', '.join(marks)})")
        if filters is not None and filters.filters:
            clauses.append(compile_filters(_mem0(filters), params, {}))
        return " AND ".join(f"({c})" for c in clauses)


def _mem0(filters: MetadataFilters) -> dict[str, Any]:
    """LlamaIndex ``MetadataFilters`` as mem0's filter language over metadata keys."""
    parts: list[dict[str, Any]] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            parts.append(_mem0(f))
            continue
        assert isinstance(f, MetadataFilter)
        op = _OPS.get(FilterOperator(f.operator))
        if op is None:
            raise InvalidArgumentError(f"filter operator {f.operator} is not supported by MarrowVectorStore")
        parts.append({f"metadata.{f.key}": {op: f.value}})
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition == FilterCondition.AND:
        return {"AND": parts}
    if condition == FilterCondition.OR:
        return {"OR": parts}
    return {"NOT": parts}


def _node(row: dict[str, Any]) -> BaseNode:
    node = metadata_dict_to_node(json.loads(row["metadata"]), text=row["content"])
    return node


class MarrowMemoryBlock(BaseMemoryBlock[str]):
    """Long-term memory for ``llama_index.core.memory.Memory``: messages put into it become memories of
    ``namespace`` (one per message with text, ``kind`` the message's role); getting it recalls the ``k`` memories
    most relevant to the latest messages, as lines of text."""

    name: str = Field(default="marrow", description="The memory block's name.")
    namespace: str = Field(default="default", description="The Marrow namespace the memories live in.")
    k: int = Field(default=5, description="How many memories a get recalls.")
    roles: tuple[str, ...] = Field(default=("user",), description="The roles whose messages are remembered.")

    _memory: Memory = PrivateAttr()

    def __init__(self, memory: Memory, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._memory = memory

    async def _aget(self, messages: Optional[list[ChatMessage]] = None, **block_kwargs: Any) -> str:
        import asyncio

        query = " ".join((m.content or "") for m in (messages or [])[-3:]).strip()
        if not query:
            return ""

        def recall() -> list[str]:
            try:
                return [h.content for h in self._memory.recall(query, self.namespace, self.k)]
            except InvalidArgumentError:
                return []

        lines = await asyncio.to_thread(recall)
        return "\n".join(f"- {line}" for line in lines)

    async def _aput(self, messages: list[ChatMessage]) -> None:
        import asyncio

        items = [
            {"content": m.content, "kind": str(m.role.value if hasattr(m.role, "value") else m.role)}
            for m in messages
            if m.content and str(m.role.value if hasattr(m.role, "value") else m.role) in self.roles
        ]
        if items:
            await asyncio.to_thread(self._memory.remember_many, items, self.namespace)
