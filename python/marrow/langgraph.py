"""A LangGraph ``BaseStore`` on a Marrow table (``pip install 'marrow[langgraph]'``, langgraph 1.x): an agent's
long-term memory across threads, with tuple namespaces, filters and semantic search by Marrow's ``embed()``.

    >>> from marrow.langgraph import MarrowStore
    >>> store = MarrowStore(marrow.connect(uri), index={"fields": ["text"]})   # semantic search on value["text"]
    >>> store.put(("users", "ada"), "pref-1", {"text": "prefers tea", "kind": "preference"})
    >>> store.search(("users",), query="what does Ada drink?", filter={"kind": "preference"})

Items live in one table (``langgraph_store`` unless named): ``id`` (the primary key: namespace and key),
``namespace`` (the tuple as JSON), ``ns_path`` (its labels joined by U+001F, for prefix matches), ``item_key``,
``metadata`` (the value as JSON), ``created_at``, ``updated_at`` and, with an ``index``, ``embedding``. A put is an
upsert; a ``None`` value deletes. ``index`` (LangGraph's ``IndexConfig``): ``fields`` are the value paths embedded
(default the whole value); ``embed`` an ``Embeddings`` object or ``"marrow"`` (the default: the server's model,
384 dimensions); ``dims`` is checked against it. ``filter`` follows LangGraph: ``{"kind": "preference"}``, nested
objects, and ``$eq $ne $gt $gte $lt $lte``; it is one WHERE clause with the namespace prefix, so a semantic search
ranks only matching items. List values in filters are not supported (a clear error). TTLs are not supported.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Optional, Union

from langchain_core.embeddings import Embeddings
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)
from langgraph.store.base.embed import get_text_at_path, tokenize_path

from ._filters import compile_filters
from ._schema import embed_dimension
from .client import Client, quote_ident
from .errors import InvalidArgumentError

_SEP = "\x1f"
_OPS = {"$eq": "eq", "$ne": "ne", "$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}
_COLUMNS = "id, namespace, item_key, metadata, created_at, updated_at"


class MarrowStore(BaseStore):
    """LangGraph's ``BaseStore`` on a Marrow table (see the module's documentation)."""

    supports_ttl = False

    def __init__(
        self,
        client: Client,
        table: str = "langgraph_store",
        *,
        index: Optional[IndexConfig] = None,
    ) -> None:
        self.client = client
        self.table = quote_ident(table)
        self._lock = threading.RLock()
        self.embeddings: Optional[Embeddings] = None
        self.fields: list[tuple[str, Union[str, list[str]]]] = []
        dims: Optional[int] = None
        if index is not None:
            embed = index.get("embed", "marrow")
            if isinstance(embed, Embeddings):
                self.embeddings = embed
            elif embed != "marrow":
                raise InvalidArgumentError("index['embed'] must be an Embeddings object or 'marrow' (server-side)")
            fields = index.get("fields") or ["$"]
            self.fields = [(p, p if p == "$" else tokenize_path(p)) for p in fields]
            dims = index.get("dims")
            if self.embeddings is None:
                server = embed_dimension(client)
                if dims is not None and dims != server:
                    raise InvalidArgumentError(f"index dims {dims}; the server's embed() gives {server}")
                dims = server
            elif dims is None:
                dims = len(self.embeddings.embed_query("dimension"))
        self.dims = dims
        vector = f", embedding FLOAT[{dims}]" if dims else ""
        client.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (id VARCHAR PRIMARY KEY, namespace VARCHAR, ns_path VARCHAR,"
            f" item_key VARCHAR, metadata VARCHAR, created_at TIMESTAMP, updated_at TIMESTAMP{vector})"
        )

    # ---- BaseStore ----------------------------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        results: list[Result] = []
        with self._lock:
            # Puts apply in order after the reads of the same batch, as LangGraph's stores do; the last put of a
            # (namespace, key) wins.
            puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
            for op in ops:
                if isinstance(op, GetOp):
                    results.append(self._get(op))
                elif isinstance(op, SearchOp):
                    results.append(self._search(op))
                elif isinstance(op, ListNamespacesOp):
                    results.append(self._list_namespaces(op))
                elif isinstance(op, PutOp):
                    _check_namespace(op.namespace)
                    puts[(tuple(op.namespace), op.key)] = op
                    results.append(None)
                else:
                    raise InvalidArgumentError(f"unknown store operation {type(op).__name__}")
            if puts:
                self._apply(list(puts.values()))
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    # ---- operations ---------------------------------------------------------------------------------------------

    def _get(self, op: GetOp) -> Optional[Item]:
        rows = self.client.sql(
            f"SELECT {_COLUMNS} FROM {self.table} WHERE id = $1", [_id(op.namespace, op.key)]
        ).to_pylist()
        return _item(rows[0]) if rows else None

    def _search(self, op: SearchOp) -> list[SearchItem]:
        params: list[Any] = []
        prefix = tuple(op.namespace_prefix)
        where = ["true"]
        if prefix:
            path = _SEP.join(prefix)
            params += [path, path + _SEP]
            where.append(f"(ns_path = ${len(params) - 1} OR starts_with(ns_path, ${len(params)}))")
        if op.filter:
            where.append(compile_filters(_mem0_filter(op.filter), params, {}))
        limit, offset = int(op.limit), int(op.offset)
        if limit < 0 or offset < 0:
            raise InvalidArgumentError("limit and offset must be at least 0")
        if op.query and self.dims:
            params.append(op.query if self.embeddings is None else self.embeddings.embed_query(op.query))
            target = f"embed(${len(params)})" if self.embeddings is None else f"${len(params)}"
            rows = self.client.sql(
                f"SELECT {_COLUMNS}, cosine_distance(embedding, {target}) AS _distance FROM {self.table}"
                f" WHERE {' AND '.join(where)} ORDER BY _distance NULLS LAST, updated_at DESC"
                f" LIMIT {limit} OFFSET {offset}",
                params,
            ).to_pylist()
            return [_search_item(r, None if r["_distance"] is None else 1.0 - float(r["_distance"])) for r in rows]
        rows = self.client.sql(
            f"SELECT {_COLUMNS} FROM {self.table} WHERE {' AND '.join(where)}"
            f" ORDER BY updated_at DESC, id LIMIT {limit} OFFSET {offset}",
            params,
        ).to_pylist()
        return [_search_item(r, None) for r in rows]

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        rows = self.client.sql(f"SELECT DISTINCT namespace FROM {self.table}").column("namespace").to_pylist()
        found: set[tuple[str, ...]] = set()
        for text in rows:
            ns = tuple(json.loads(text))
            if op.match_conditions and not all(_matches(c.match_type, tuple(c.path), ns) for c in op.match_conditions):
                continue
            found.add(ns[: op.max_depth] if op.max_depth is not None else ns)
        return sorted(found)[op.offset : op.offset + op.limit]

    def _apply(self, puts: list[PutOp]) -> None:
        deletes = [_id(p.namespace, p.key) for p in puts if p.value is None]
        if deletes:
            marks = ", ".join(f"${n + 1}" for n in range(len(deletes)))
            self.client.execute(f"DELETE FROM {self.table} WHERE id IN ({marks})", deletes)
        writes = [p for p in puts if p.value is not None]
        if not writes:
            return
        texts = [self._text(p) for p in writes]
        given: list[Optional[list[float]]] = [None] * len(writes)
        if self.embeddings is not None:
            todo = [n for n, t in enumerate(texts) if t is not None]
            vectors = self.embeddings.embed_documents([texts[n] or "" for n in todo]) if todo else []
            for n, v in zip(todo, vectors, strict=True):
                given[n] = [float(x) for x in v]
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        params: list[Any] = []
        values = []
        for n, p in enumerate(writes):
            ns = tuple(p.namespace)
            params += [_id(ns, p.key), json.dumps(list(ns)), _SEP.join(ns), p.key, json.dumps(p.value), now]
            row = [f"${len(params) - k}" for k in (5, 4, 3, 2, 1, 0)] + [f"${len(params)}"]
            if self.dims:
                if self.embeddings is not None:
                    if given[n] is None:
                        row.append("NULL")
                    else:
                        params.append(given[n])
                        row.append(f"${len(params)}")
                elif texts[n] is None:
                    row.append("NULL")
                else:
                    params.append(texts[n])
                    row.append(f"embed(${len(params)})")
            values.append("(" + ", ".join(row) + ")")
        vector_col = ", embedding" if self.dims else ""
        vector_set = ", embedding = excluded.embedding" if self.dims else ""
        self.client.execute(
            f"INSERT INTO {self.table} (id, namespace, ns_path, item_key, metadata, created_at, updated_at{vector_col})"
            f" VALUES {', '.join(values)} ON CONFLICT (id) DO UPDATE SET metadata = excluded.metadata,"
            f" updated_at = excluded.updated_at{vector_set}",
            params,
        )

    def _text(self, put: PutOp) -> Optional[str]:
        """The text embedded for a put (None: not indexed)."""
        if not self.dims or put.index is False:
            return None
        fields = self.fields
        if isinstance(put.index, list):
            fields = [(p, p if p == "$" else tokenize_path(p)) for p in put.index]
        parts: list[str] = []
        for path, tokens in fields:
            parts += [json.dumps(put.value)] if path == "$" else get_text_at_path(put.value, tokens)
        text = "\n".join(p for p in parts if p)
        return text or None


def _id(namespace: Iterable[str], key: str) -> str:
    return json.dumps([list(namespace), key])


def _check_namespace(namespace: tuple[str, ...]) -> None:
    if not namespace:
        raise InvalidArgumentError("a namespace needs at least one label")
    for label in namespace:
        if not isinstance(label, str) or not label or _SEP in label:
            raise InvalidArgumentError(f"namespace labels must be non-empty strings, got {label!r}")


def _item(row: Mapping[str, Any]) -> Item:
    return Item(
        namespace=tuple(json.loads(row["namespace"])),
        key=row["item_key"],
        value=json.loads(row["metadata"]),
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
    )


def _search_item(row: Mapping[str, Any], score: Optional[float]) -> SearchItem:
    i = _item(row)
    return SearchItem(
        namespace=i.namespace,
        key=i.key,
        value=i.value,
        created_at=i.created_at,
        updated_at=i.updated_at,
        score=score,
    )


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t


def _matches(kind: str, path: tuple[str, ...], ns: tuple[str, ...]) -> bool:
    if len(ns) < len(path):
        return False
    pairs = zip(ns, path, strict=False) if kind == "prefix" else zip(reversed(ns), reversed(path), strict=False)
    return all(p == "*" or n == p for n, p in pairs)


def _mem0_filter(filter: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:  # noqa: A002 - LangGraph's name
    """LangGraph's filter as mem0's, every key a path in the value (``metadata.<path>``)."""
    out: dict[str, Any] = {}
    for key, want in filter.items():
        path = f"{prefix}{key}"
        if isinstance(want, Mapping) and want and all(str(k).startswith("$") for k in want):
            ops = {}
            for op, v in want.items():
                if op not in _OPS:
                    raise InvalidArgumentError(f"unknown filter operator {op!r} on {key!r}; use {sorted(_OPS)}")
                ops[_OPS[op]] = v
            out[f"metadata.{path}"] = ops
        elif isinstance(want, Mapping):
            out.update(_mem0_filter(want, f"{path}."))
        elif isinstance(want, (list, tuple)):
            raise InvalidArgumentError(f"filter on {key!r}: list values are not supported by MarrowStore")
        else:
            out[f"metadata.{path}"] = {"eq": want}
    return out
