"""A LangChain ``VectorStore`` over a Marrow table (``pip install 'marrow[langchain]'``, langchain-core 1.x).

    >>> from marrow.langchain import MarrowVectorStore
    >>> store = MarrowVectorStore(marrow.connect(uri), table="docs")          # embedded by Marrow's embed()
    >>> store.add_texts(["Ada prefers tea", "Bob likes rain"], [{"who": "ada"}, {"who": "bob"}])
    >>> store.similarity_search("what does Ada drink?", k=1, filter={"who": "ada"})

The table (created on first use) has ``id VARCHAR PRIMARY KEY, content VARCHAR, metadata VARCHAR`` (JSON) and
``embedding FLOAT[n]``. Without an ``Embeddings`` object, texts and queries are embedded by the server (``embed()``,
all-MiniLM-L6-v2); with one, its vectors are stored and searched. Adding a document whose id exists replaces it (an
upsert: one commit per batch). ``filter`` takes mem0's filter language (:mod:`marrow._filters`) over ``id``,
``content`` and metadata keys, compiled to a WHERE clause that prefilters the vector search (an ANN index on the
table is used when there is one). Scores: ``similarity_search_with_score`` gives the cosine distance (lower is
closer); ``similarity_search_with_relevance_scores`` gives ``1 - distance``. Async methods run the sync ones in a
worker thread; calls on one store are serialized (one ADBC connection).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from ._filters import compile_filters
from ._schema import embed_dimension, vector_dimension
from .client import Client, quote_ident
from .errors import InvalidArgumentError

#: The store's own columns a filter may name (anything else is a metadata key).
FILTER_COLUMNS = {"id": "text", "content": "text"}
#: Rows per INSERT statement when adding.
BATCH = 256


class MarrowVectorStore(VectorStore):
    """LangChain's ``VectorStore`` on a Marrow table (see the module's documentation)."""

    def __init__(
        self,
        client: Client,
        table: str = "langchain_documents",
        embedding: Optional[Embeddings] = None,
    ) -> None:
        self.client = client
        self.table = quote_ident(table)
        self.embedding = embedding
        self._lock = threading.RLock()
        self._dimension: Optional[int] = vector_dimension(client, self.table)

    @property
    def embeddings(self) -> Optional[Embeddings]:
        return self.embedding

    # ---- the table ----------------------------------------------------------------------------------------------

    def _ensure_table(self, dimension: int) -> None:
        if self._dimension is None:
            self.client.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (id VARCHAR PRIMARY KEY, content VARCHAR,"
                f" metadata VARCHAR, embedding FLOAT[{dimension}])"
            )
            self._dimension = vector_dimension(self.client, self.table)
        if self._dimension != dimension:
            raise InvalidArgumentError(
                f"table {self.table} holds {self._dimension}-dimensional vectors; the embeddings give {dimension}"
            )

    # ---- writes -------------------------------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[list[dict[str, Any]]] = None,
        *,
        ids: Optional[Sequence[Optional[str]]] = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add (or, for an existing id, replace) texts; returns their ids (generated where none is given)."""
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidArgumentError(f"{len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise InvalidArgumentError(f"{len(ids)} ids for {len(texts)} texts")
        for t in texts:
            if not isinstance(t, str):
                raise InvalidArgumentError(f"texts must be strings, got {type(t).__name__}")
        out = [i if i else str(uuid.uuid4()) for i in (ids or [None] * len(texts))]
        metas = [json.dumps(m or {}) for m in (metadatas or [{}] * len(texts))]
        if not texts:
            return []
        vectors = None if self.embedding is None else self.embedding.embed_documents(texts)
        with self._lock:
            self._ensure_table(len(vectors[0]) if vectors else embed_dimension(self.client))
            # A later row with the same id replaces an earlier one of the same call, as a later call would.
            last = {i: n for n, i in enumerate(out)}
            rows = [n for n, i in enumerate(out) if last[i] == n]
            for start in range(0, len(rows), BATCH):
                params: list[Any] = []
                values = []
                for n in rows[start : start + BATCH]:
                    params += [out[n], texts[n], metas[n]]
                    p = len(params)
                    if vectors is None:
                        values.append(f"(${p - 2}, ${p - 1}, ${p}, embed(${p - 1}))")
                    else:
                        params.append([float(x) for x in vectors[n]])
                        values.append(f"(${p - 2}, ${p - 1}, ${p}, ${p + 1})")
                self.client.execute(
                    f"INSERT INTO {self.table} (id, content, metadata, embedding) VALUES {', '.join(values)}"
                    " ON CONFLICT (id) DO UPDATE SET content = excluded.content, metadata = excluded.metadata,"
                    " embedding = excluded.embedding",
                    params,
                )
        return out

    def delete(self, ids: Optional[list[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Delete the documents with these ids (all documents when ``ids`` is None); True when done."""
        with self._lock:
            if self._dimension is None:
                return True
            if ids is None:
                self.client.execute(f"DELETE FROM {self.table}")
                return True
            ids = list(ids)
            for start in range(0, len(ids), BATCH):
                chunk = ids[start : start + BATCH]
                marks = ", ".join(f"${n + 1}" for n in range(len(chunk)))
                self.client.execute(f"DELETE FROM {self.table} WHERE id IN ({marks})", chunk)
        return True

    def drop(self) -> None:
        """Drop the table (every document and its history)."""
        with self._lock:
            self.client.execute(f"DROP TABLE IF EXISTS {self.table}")
            self._dimension = None

    # ---- reads --------------------------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        ids = list(ids)
        if not ids or self._dimension is None:
            return []
        marks = ", ".join(f"${n + 1}" for n in range(len(ids)))
        with self._lock:
            rows = self.client.sql(
                f"SELECT id, content, metadata FROM {self.table} WHERE id IN ({marks})", ids
            ).to_pylist()
        return [_document(r) for r in rows]

    def _search(
        self,
        query: Optional[str],
        vector: Optional[list[float]],
        k: int,
        filter: Optional[dict[str, Any]],  # noqa: A002 - LangChain's name
        with_embeddings: bool = False,
    ) -> list[dict[str, Any]]:
        if not isinstance(k, int) or k < 1:
            raise InvalidArgumentError(f"k must be a positive integer, got {k!r}")
        if self._dimension is None:
            return []
        params: list[Any] = []
        where = compile_filters(filter, params, FILTER_COLUMNS) if filter else "true"
        if vector is not None:
            params.append([float(x) for x in vector])
            target = f"${len(params)}"
        else:
            params.append(query)
            target = f"embed(${len(params)})"
        extra = ", embedding" if with_embeddings else ""
        with self._lock:
            return self.client.sql(
                f"SELECT id, content, metadata{extra}, cosine_distance(embedding, {target}) AS _distance"
                f" FROM {self.table} WHERE {where} ORDER BY _distance LIMIT {k}",
                params,
            ).to_pylist()

    def _query_vector(self, query: str) -> Optional[list[float]]:
        return None if self.embedding is None else self.embedding.embed_query(query)

    def similarity_search(
        self,
        query: str,
        k: int = 4,
        filter: Optional[dict[str, Any]] = None,  # noqa: A002 - LangChain's name
        **kwargs: Any,
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: Optional[dict[str, Any]] = None,  # noqa: A002 - LangChain's name
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The k nearest documents and their cosine distances (lower is closer)."""
        rows = self._search(query, self._query_vector(query), k, filter)
        return [(_document(r), float(r["_distance"])) for r in rows]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: Optional[dict[str, Any]] = None,  # noqa: A002 - LangChain's name
        **kwargs: Any,
    ) -> list[Document]:
        return [_document(r) for r in self._search(None, embedding, k, filter)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return self._cosine_relevance_score_fn

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Optional[dict[str, Any]] = None,  # noqa: A002 - LangChain's name
        **kwargs: Any,
    ) -> list[Document]:
        vector = self._query_vector(query)
        if vector is None:
            with self._lock:
                vector = list(self.client.scalar("SELECT embed($1)", [query]))
        return self.max_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter)

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Optional[dict[str, Any]] = None,  # noqa: A002 - LangChain's name
        **kwargs: Any,
    ) -> list[Document]:
        """The nearest ``fetch_k`` documents, then ``k`` of them picked for relevance and diversity (MMR)."""
        rows = self._search(None, embedding, max(fetch_k, k), filter, with_embeddings=True)
        if not rows:
            return []
        chosen = maximal_marginal_relevance(
            np.asarray(embedding, dtype=np.float32),
            [list(r["embedding"]) for r in rows],
            k=k,
            lambda_mult=lambda_mult,
        )
        return [_document(rows[i]) for i in chosen]

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Optional[Embeddings] = None,
        metadatas: Optional[list[dict[str, Any]]] = None,
        *,
        client: Optional[Client] = None,
        table: str = "langchain_documents",
        ids: Optional[list[str]] = None,
        **kwargs: Any,
    ) -> MarrowVectorStore:
        """A store on ``client``'s ``table`` holding ``texts``."""
        if client is None:
            raise InvalidArgumentError("MarrowVectorStore.from_texts needs client=marrow.connect(…)")
        store = cls(client, table, embedding)
        store.add_texts(texts, metadatas, ids=ids)
        return store


def _document(row: dict[str, Any]) -> Document:
    return Document(id=row["id"], page_content=row["content"], metadata=json.loads(row["metadata"] or "{}"))
