"""The memory API (what users of mem0 expect), scoped by namespace (a user, an agent or a session), over SQL.

Tables (created if missing; all plain Marrow tables you can query):

- ``memories`` — Marrow's built-in table; the server embeds ``content`` when a row arrives without an embedding.
- ``memory_events`` — one row per change (``add``, ``update``, ``merge``, ``merged_into``), with old and new content,
  when and by whom. ``history()`` reads it; Lance versions are not used for history because they get cleaned up.
- ``memory_access_log`` — append-only: one row per memory returned by ``recall()``. Reads never rewrite
  ``memories`` (no new versions, no rows pushed out of the vector index); ``maintain()`` folds the log into
  ``access_count`` / ``last_accessed_at`` later, as the router's L4 step.

Each call is one or a few SQL statements; each statement is atomic. Bad input (empty text, wrong embedding dimension,
unknown namespace or memory) is rejected before anything is written.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow as pa

from . import _filters, _schema, _validate
from ._background import BackgroundAppender
from .client import Client, quote_literal
from .errors import FailedPreconditionError, InvalidArgumentError, MarrowError, NotFoundError
from .records import MEMORY_COLUMNS, Hit, MemoryEvent, MemoryRecord

if TYPE_CHECKING:
    from .adapters import QueryAdapter

__all__ = [
    "Memory",
    "scope",
    "judge_by_words",
    "MemoryRecord",
    "Hit",
    "MemoryEvent",
    "Merge",
    "MaintenanceReport",
    "ForgetReport",
    "MEMORY_TABLES",
]

# The tables a Memory reads and writes: the server's `memories` and the two it creates.
MEMORY_TABLES = ("memories", *_schema.MEMORY)

#: The ways :meth:`Memory.recall` searches.
RECALL_MODES = ("hybrid", "vector", "keyword")
#: Candidates each side of a hybrid recall ranks, at least: min-max scaling needs more than a handful.
HYBRID_WINDOW = 10

#: What a memory that has not expired satisfies (``expires_at`` NULL: it never does).
LIVE = "(expires_at IS NULL OR expires_at > now())"


def scope(user_id: Optional[str] = None, agent_id: Optional[str] = None, run_id: Optional[str] = None) -> str:
    """The namespace of a user / agent / run scope (mem0's ``user_id``, ``agent_id``, ``run_id``), a path from the
    widest scope to the narrowest: ``scope("alice", "planner", "r7") == "user=alice/agent=planner/run=r7"``.

    Namespaces are paths, so a search with ``descendants=True`` over ``scope("alice")`` covers all of Alice's agents
    and runs, and one over ``scope("alice", "planner")`` all runs of that agent.
    """
    parts = [
        (name, value) for name, value in (("user", user_id), ("agent", agent_id), ("run", run_id)) if value is not None
    ]
    if not parts:
        raise InvalidArgumentError("scope needs at least one of user_id, agent_id, run_id")
    for name, value in parts:
        if not isinstance(value, str) or not value.strip() or "/" in value:
            raise InvalidArgumentError(f"{name}_id must be a non-empty string without '/', got {value!r}")
    return "/".join(f"{name}={value}" for name, value in parts)


def namespace_predicate(namespace: str, descendants: bool, params: list[Any]) -> str:
    """The WHERE condition for a namespace, and with ``descendants`` every namespace below it (``namespace/…``)."""
    params.append(_validate.namespace(namespace))
    if not descendants:
        return f"namespace = ${len(params)}"
    params.append(namespace + "/")
    return f"(namespace = ${len(params) - 1} OR starts_with(namespace, ${len(params)}))"


@dataclass(frozen=True)
class Merge:
    """``merged`` was folded into ``kept`` by :meth:`Memory.consolidate` (cosine distance ``distance``).

    ``relation`` is the judge's verdict: ``"duplicate"`` (the same fact; the more specific text is kept, the newer
    on a tie) or ``"contradiction"`` (a changed fact; the newer is kept, the older superseded).
    """

    kept: str
    merged: str
    distance: float
    relation: str = "duplicate"


@dataclass(frozen=True)
class MaintenanceReport:
    folded_rows: int
    memories_touched: int
    #: Memories past their ``expires_at`` that were deleted (each leaves an ``expire`` event in the history).
    expired: int = 0


@dataclass(frozen=True)
class ForgetReport:
    """What :meth:`Memory.forget` removed; ``purged`` lists the tables whose old versions were physically deleted."""

    memory_id: str
    events_deleted: int
    access_rows_deleted: int
    purged: list[str] = field(default_factory=list)


MemoryInput = Union[str, Mapping[str, Any]]

#: ``judge(older, newer)`` → ``"duplicate"``, ``"contradiction"`` or ``"distinct"`` (see :meth:`Memory.consolidate`).
Judge = Callable[[MemoryRecord, MemoryRecord], str]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NEGATIONS = frozenset({"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot"})
# Words that carry no fact of their own: a pair that differs only in these says the same thing.
_FILLER = frozenset(
    "a an the is are was were be been being am do does did has have had will would shall should can could may might"
    " must to of in on at by for with from as and or but so that this these those it its it's i me my we our you your"
    " he him his she her they them their there here very really just also too quite called named currently now"
    " still already".split()
)


def _words(text: str) -> list[str]:
    words = []
    for w in _WORD.findall(text.lower()):
        if w.endswith("n't"):
            words += [w[:-3] or w, "not"]
        else:
            words.append(w)
    return words


def _content_words(text: str) -> set[str]:
    return {w for w in _words(text) if w not in _FILLER and w not in _NEGATIONS}


def _negated(text: str) -> bool:
    return sum(w in _NEGATIONS for w in _words(text)) % 2 == 1


def judge_by_words(older: MemoryRecord, newer: MemoryRecord) -> str:
    """The default judge of :meth:`Memory.consolidate`, for two memories the embedding puts close together.

    - ``"contradiction"``: one is negated and the other not ("is vegetarian" / "is not vegetarian"), a word
      replaced by another, one on each side ("likes" / "dislikes", "on Monday" / "on Tuesday", "at 3pm" / "at
      4pm"): a fact whose value changed.
    - ``"duplicate"``: the same content words, or one's content words inside the other's (a more specific
      restatement).
    - ``"distinct"``: anything else; both stay.
    """
    a, b = _content_words(older.content), _content_words(newer.content)
    if _negated(older.content) != _negated(newer.content):
        return "contradiction"
    only_a, only_b = a - b, b - a
    if len(only_a) == 1 and len(only_b) == 1:
        return "contradiction"
    if not only_a or not only_b:
        return "duplicate"
    return "distinct"


class Memory:
    """Memories of one Marrow database, scoped by namespace.

    ``actor`` is written into ``memory_events`` as who made each change. ``dimension`` (384 for the bundled
    MiniLM) is read from the ``memories`` schema, and caller-supplied embeddings are checked against it.
    """

    def __init__(
        self,
        client: Client,
        *,
        actor: str = "marrow-python",
        access_log: str = "background",
        access_flush_every: int = 1,
    ) -> None:
        self.db = client
        self.actor = actor
        # How recall's access-log rows are sent: "background" (default) queues them for a thread with its own
        # connection, which writes the rows of many recalls in one ingest, so the log adds no latency to recall;
        # "sync" sends them from recall itself, every `access_flush_every` recalls; "off" keeps no log. Rows not yet
        # sent when the process dies are lost (access statistics only, never memories). `flush_access_log()` sends
        # them; `maintain()` and `close()` call it.
        if access_log not in ("background", "sync", "off"):
            raise InvalidArgumentError(f"access_log must be 'background', 'sync' or 'off', not {access_log!r}")
        self.access_log = access_log
        self.access_flush_every = max(1, int(access_flush_every))
        self._access_buffer: list[pa.Table] = []
        self._appender: Optional[BackgroundAppender] = (
            BackgroundAppender(client, "memory_access_log") if access_log == "background" else None
        )
        self._text_index: Optional[bool] = None
        self._embedder_error: Optional[str] = None
        _schema.ensure_tables(client, *_schema.MEMORY)
        dimension = _schema.vector_dimension(client, "memories")
        assert dimension is not None, "ensure_tables made memories"
        self.dimension: int = dimension

    def require_embedder(self) -> None:
        """Raise unless the server can embed text (asked once per :class:`Memory`): a memory stored without an
        embedding would never be found by a vector or hybrid recall."""
        if self._embedder_error is None:
            try:
                self.db.scalar("SELECT embed('marrow embedding probe') IS NOT NULL")
                self._embedder_error = ""
            except MarrowError as e:
                self._embedder_error = str(e)
        if self._embedder_error:
            raise FailedPreconditionError(
                "the server cannot embed text, so memories without an embedding cannot be stored: pass embedding=…"
                f" with each memory, or start marrow with an embedding model ({self._embedder_error})"
            )

    def namespace_exists(self, namespace: str) -> bool:
        return bool(self.db.scalar("SELECT count(*) FROM memories WHERE namespace = $1", [namespace]))

    def require_namespace(self, namespace: str) -> None:
        _validate.namespace(namespace)
        if not self.namespace_exists(namespace):
            raise NotFoundError(f"unknown namespace {namespace!r}: it has no memories", grpc_code="NOT_FOUND")

    # -- writes ----------------------------------------------------------------------------------------------
    def remember(
        self,
        content: str,
        namespace: str = "default",
        *,
        kind: str = "note",
        importance: float = 0.5,
        metadata: Optional[Mapping[str, Any]] = None,
        embedding: Optional[Sequence[float]] = None,
        id: Optional[str] = None,  # noqa: A002 - mirrors the column
        ttl: Union[float, timedelta, None] = None,
        expires_at: Optional[datetime] = None,
    ) -> str:
        """Store one memory and its ``add`` event; returns its id. Without ``embedding`` the server embeds
        ``content``. ``ttl`` (seconds or a timedelta) or ``expires_at`` make it expire: from then on recall, get,
        recent, count and the ``live_memories`` view no longer see it, and :meth:`maintain` deletes it."""
        return self.remember_many(
            [
                {
                    "content": content,
                    "kind": kind,
                    "importance": importance,
                    "metadata": metadata,
                    "embedding": embedding,
                    "id": id,
                    "ttl": ttl,
                    "expires_at": expires_at,
                }
            ],
            namespace,
        )[0]

    def remember_many(self, items: Iterable[MemoryInput], namespace: str = "default") -> list[str]:
        """Store many memories with one bulk ingest (plus one for their events); returns their ids in order.

        Each item is a string (the content) or a mapping with ``content`` and optionally ``kind``, ``importance``,
        ``metadata``, ``embedding``, ``id``, ``namespace``, ``ttl``, ``expires_at``. Every item is validated before
        anything is written.
        Items with an embedding and items without are sent as two ingests (the server embeds the latter).
        """
        _validate.namespace(namespace)
        known = {"content", "kind", "importance", "metadata", "embedding", "id", "namespace", "ttl", "expires_at"}
        # Values repeated across a batch (namespaces, kinds) are validated once each; vectors in one pass below.
        checked: dict[tuple[str, str], str] = {}

        def once(value: Any, what: str, check: Callable[[Any], str]) -> str:
            if isinstance(value, str):
                hit = checked.get((what, value))
                if hit is not None:
                    return hit
                checked[(what, value)] = check(value)
                return value
            return check(value)

        rows: list[dict[str, Any]] = []
        vectors: list[Any] = []
        for item in items:
            spec: Mapping[str, Any] = {"content": item} if isinstance(item, str) else item
            if not spec.keys() <= known:
                raise InvalidArgumentError(f"unknown memory fields: {sorted(set(spec) - known)}")
            rows.append(
                {
                    "id": spec.get("id") or str(uuid.uuid4()),
                    "namespace": once(spec.get("namespace") or namespace, "namespace", _validate.namespace),
                    "kind": once(spec.get("kind") or "note", "kind", lambda v: _validate.text(v, "kind")),
                    "content": _validate.text(spec.get("content"), "content"),
                    "importance": _validate.importance(spec.get("importance", 0.5)),
                    "metadata": _validate.metadata(spec.get("metadata")),
                    "expires_at": _validate.expiry(spec.get("ttl"), spec.get("expires_at")),
                }
            )
            vectors.append(spec.get("embedding"))
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        if len(set(ids)) != len(ids):
            raise InvalidArgumentError("duplicate ids in one remember_many call")
        base = [
            pa.field("id", pa.string()),
            pa.field("namespace", pa.string()),
            pa.field("kind", pa.string()),
            pa.field("content", pa.string()),
            pa.field("importance", pa.float32()),
            pa.field("metadata", pa.string()),
            pa.field("expires_at", pa.timestamp("us", tz="UTC")),
        ]
        with_vec = [i for i, v in enumerate(vectors) if v is not None]
        without = [i for i, v in enumerate(vectors) if v is None]
        if without:
            self.require_embedder()
        for group, has_vec in ((with_vec, True), (without, False)):
            if not group:
                continue
            columns = {f.name: pa.array([rows[i][f.name] for i in group], f.type) for f in base}
            if has_vec:
                stacked = _validate.embeddings([vectors[i] for i in group], self.dimension)
                columns["embedding"] = pa.FixedSizeListArray.from_arrays(
                    pa.array(stacked.reshape(-1), pa.float32()), self.dimension
                )
            self.db.ingest("memories", pa.table(columns))
        events = pa.table(
            {
                "memory_id": ids,
                "namespace": [r["namespace"] for r in rows],
                "operation": ["add"] * len(rows),
                "new_content": [r["content"] for r in rows],
                "actor": [self.actor] * len(rows),
            }
        )
        self.db.ingest("memory_events", events)
        return ids

    def update(
        self,
        memory_id: str,
        *,
        content: Optional[str] = None,
        importance: Optional[float] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        kind: Optional[str] = None,
        replace_metadata: bool = False,
    ) -> MemoryRecord:
        """Change a memory (a new content is re-embedded by the server) and record an ``update`` event.

        ``metadata`` is a patch: its keys are set, a key set to ``None`` is removed, other keys stay. With
        ``replace_metadata=True`` it replaces the whole dict instead."""
        if content is None and importance is None and metadata is None and kind is None:
            raise InvalidArgumentError("update needs at least one of content, importance, metadata, kind")
        sets: list[str] = []
        params: list[Any] = []
        if content is not None:
            params.append(_validate.text(content, "content"))
            sets.append(f"content = ${len(params)}")
        if importance is not None:
            params.append(_validate.importance(importance))
            sets.append(f"importance = ${len(params)}")
        if kind is not None:
            params.append(_validate.text(kind, "kind"))
            sets.append(f"kind = ${len(params)}")
        if metadata is not None:
            _validate.metadata(metadata)
        old = self.get(memory_id)
        if metadata is not None:
            merged = dict(metadata) if replace_metadata else {**old.metadata, **metadata}
            params.append(_validate.metadata({key: v for key, v in merged.items() if v is not None}))
            sets.append(f"metadata = ${len(params)}")
        params.append(memory_id)
        self.db.execute(f"UPDATE memories SET {', '.join(sets)}, updated_at = now() WHERE id = ${len(params)}", params)
        new = self.get(memory_id)
        changed = {
            name: {"old": getattr(old, name), "new": getattr(new, name)}
            for name in ("importance", "metadata", "kind")
            if getattr(old, name) != getattr(new, name)
        }
        self._event(new.id, new.namespace, "update", old.content, new.content, details=changed)
        return new

    def _event(
        self,
        memory_id: str,
        namespace: str,
        operation: str,
        old: Optional[str],
        new: Optional[str],
        *,
        related: Optional[str] = None,
        details: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.db.execute(
            "INSERT INTO memory_events (memory_id, namespace, operation, old_content, new_content, related_id, actor,"
            " details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [memory_id, namespace, operation, old, new, related, self.actor, json.dumps(details or {}, default=str)],
        )

    def _removal_events(self, rows: list[dict[str, Any]], operation: str, details: list[dict[str, Any]]) -> None:
        """One ingest of ``operation`` events for memories about to be removed (rows with id, namespace, content)."""
        self.db.ingest(
            "memory_events",
            pa.table(
                {
                    "memory_id": [r["id"] for r in rows],
                    "namespace": [r["namespace"] for r in rows],
                    "operation": [operation] * len(rows),
                    "old_content": [r["content"] for r in rows],
                    "actor": [self.actor] * len(rows),
                    "details": [json.dumps(d) for d in details],
                }
            ),
        )

    def forget(self, memory_id: str, *, purge: bool = False) -> ForgetReport:
        """Delete a memory and its access-log rows; its history stays, with a ``delete`` event holding the text.

        A ``DELETE`` only hides rows from new versions: the content stays readable by time travel (``VERSION AS
        OF``) and on disk until old versions are cleaned up. With ``purge=True`` the memory is removed physically,
        its history too (the ``delete`` event then records that it was purged, not what it said): ``CALL
        compact_table`` rewrites each table's files without the deleted rows, then ``CALL cleanup_versions(table,
        INTERVAL '0 seconds')`` deletes every older version. That also drops time travel to earlier versions of
        those tables for everyone (tagged versions are kept and still hold the memory — untag them first). A user
        who says "forget this" means it: use ``purge=True``.
        """
        try:
            record = self.get(memory_id, include_expired=True)
            namespace = record.namespace
        except NotFoundError:
            if not purge:
                raise
            # Deleted earlier without a purge: its history (and old versions) still hold its text.
            namespace = self.history(memory_id)[0].namespace
        else:
            if not purge:
                # The event first: a failure before the delete leaves an extra event, never a silent deletion.
                self._event(record.id, namespace, "delete", record.content, None)
        self.db.execute("DELETE FROM memories WHERE id = $1", [memory_id])
        events = 0
        if purge:
            events = self.db.execute("DELETE FROM memory_events WHERE memory_id = $1 OR related_id = $1", [memory_id])
        self.flush_access_log()  # rows of recalls made before the forget go with it
        access = self.db.execute("DELETE FROM memory_access_log WHERE memory_id = $1", [memory_id])
        extra = self._forget_hook(memory_id)
        purged: list[str] = []
        if purge:
            for table in ("memories", "memory_events", "memory_access_log", *extra):
                self.db.execute(f"CALL compact_table({quote_literal(table)})")
                self.db.execute(f"CALL cleanup_versions({quote_literal(table)}, INTERVAL '0 seconds')")
                purged.append(table)
            self._event(memory_id, namespace, "delete", None, None, details={"purged": True})
        return ForgetReport(memory_id, events, access, purged)

    def delete_all(self, namespace: str, *, descendants: bool = False) -> int:
        """Delete every memory of ``namespace`` (with ``descendants``, of the namespaces below it too); returns how
        many. Each keeps its history with a ``delete`` event (one ingest), then one ``DELETE`` removes them all;
        their access-log and feedback rows go too. An empty namespace deletes nothing and returns 0."""
        params: list[Any] = []
        where = namespace_predicate(namespace, descendants, params)
        rows = self.db.sql(f"SELECT id, namespace, content FROM memories WHERE {where}", params).to_pylist()
        if not rows:
            return 0
        self._removal_events(rows, "delete", [{"delete_all": namespace}] * len(rows))
        deleted = self.db.execute(f"DELETE FROM memories WHERE {where}", params)
        self.flush_access_log()
        self.db.execute(f"DELETE FROM memory_access_log WHERE {where}", params)
        if self.db.table_exists("memory_feedback"):
            self.db.execute(f"DELETE FROM memory_feedback WHERE {where}", params)
        return deleted

    def _forget_hook(self, memory_id: str) -> list[str]:
        """Other tables holding rows about a memory (the conditioner's feedback); deletes them, returns their
        names so a purge covers them too."""
        if self.db.table_exists("memory_feedback"):
            self.db.execute("DELETE FROM memory_feedback WHERE memory_id = $1", [memory_id])
            return ["memory_feedback"]
        return []

    # -- reads -----------------------------------------------------------------------------------------------
    def get(self, memory_id: str, *, include_expired: bool = False) -> MemoryRecord:
        """One memory; an expired one only with ``include_expired`` (until :meth:`maintain` deletes it)."""
        _validate.text(memory_id, "memory id")
        live = "" if include_expired else f" AND {LIVE}"
        rows = self.db.sql(f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id = $1{live}", [memory_id]).to_pylist()
        if not rows:
            raise NotFoundError(f"no memory with id {memory_id!r}", grpc_code="NOT_FOUND")
        return MemoryRecord.from_row(rows[0])

    def recent(
        self, namespace: str, *, limit: int = 100, offset: int = 0, descendants: bool = False
    ) -> list[MemoryRecord]:
        """A page of the namespace's memories, newest first: ``limit`` (1 to 10,000) from ``offset`` on. An empty
        namespace gives ``[]``. :meth:`all` walks every page."""
        _validate.int_in_range(limit, "limit", 1, 10_000)
        _validate.int_in_range(offset, "offset", 0, 2**62)
        params: list[Any] = []
        where = namespace_predicate(namespace, descendants, params)
        rows = self.db.sql(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE {where} AND {LIVE}"
            f" ORDER BY created_at DESC, id DESC LIMIT {limit} OFFSET {offset}",
            params,
        ).to_pylist()
        return [MemoryRecord.from_row(r) for r in rows]

    def all(self, namespace: str, *, page_size: int = 1000, descendants: bool = False) -> Iterator[MemoryRecord]:
        """Every memory of the namespace, newest first, fetched ``page_size`` at a time by keyset pagination (each
        page starts after the last one's (created_at, id), so writes in between neither repeat nor skip rows
        that were already there)."""
        _validate.int_in_range(page_size, "page_size", 1, 10_000)
        after: Optional[MemoryRecord] = None
        while True:
            params: list[Any] = []
            where = namespace_predicate(namespace, descendants, params)
            if after is not None:
                params += [after.created_at, after.id]
                n = len(params)
                where += f" AND (created_at < ${n - 1} OR (created_at = ${n - 1} AND id < ${n}))"
            rows = self.db.sql(
                f"SELECT {MEMORY_COLUMNS} FROM memories WHERE {where} AND {LIVE}"
                f" ORDER BY created_at DESC, id DESC LIMIT {page_size}",
                params,
            ).to_pylist()
            records = [MemoryRecord.from_row(r) for r in rows]
            yield from records
            if len(records) < page_size:
                return
            after = records[-1]

    def count(self, namespace: Optional[str] = None, *, descendants: bool = False) -> int:
        """Memories that have not expired (of one namespace, or all)."""
        if namespace is None:
            return int(self.db.scalar(f"SELECT count(*) FROM memories WHERE {LIVE}"))
        params: list[Any] = []
        where = namespace_predicate(namespace, descendants, params)
        return int(self.db.scalar(f"SELECT count(*) FROM memories WHERE {where} AND {LIVE}", params))

    def _where(
        self, namespace: str, filters: Optional[Mapping[str, Any]], params: list[Any], descendants: bool = False
    ) -> str:
        where = f"{namespace_predicate(namespace, descendants, params)} AND {LIVE}"
        if filters:
            where += f" AND ({_filters.compile_filters(filters, params)})"
        return where

    def query_vector(self, text: str) -> list[float]:
        """``embed(text)`` computed by the server (the same model that embeds the memories)."""
        _validate.text(text, "query")
        vec = self.db.scalar("SELECT embed($1)", [text])
        return [float(x) for x in vec]

    def recall(
        self,
        query: Optional[str],
        namespace: str = "default",
        k: int = 5,
        filters: Optional[Mapping[str, Any]] = None,
        *,
        mode: Optional[str] = None,
        embedding: Optional[Sequence[float]] = None,
        log_access: bool = True,
        descendants: bool = False,
        adapter: Optional[QueryAdapter] = None,
    ) -> list[Hit]:
        """The ``k`` memories of ``namespace`` that best match ``query``, best first.

        ``mode``:

        - ``"hybrid"`` (the default when ``memories.content`` has a full-text index, which every data directory
          gets): keyword (BM25) and vector search fused by relative score (each side's scores scaled to [0, 1]),
          one ``hybrid_search`` statement; names, dates and rare words are found by the first, paraphrases by the
          second.
        - ``"vector"``: cosine distance to ``embed(query)`` (or to ``embedding``), through the ANN index if any.
        - ``"keyword"``: BM25 alone (``fts_search``).

        ``filters`` is mem0's filter language over columns and ``metadata`` keys (``{"AND": [{"kind": "fact"},
        {"turn": {"gte": 3}}]}``, operators ``eq, ne, gt, gte, lt, lte, in, nin, contains, icontains``, ``AND``,
        ``OR``, ``NOT``; see :mod:`marrow._filters`). It, the namespace and expiry are one WHERE clause, a
        prefilter of every mode: k hits come back whenever k memories pass it. Expired memories are never found.
        ``Hit.distance`` is the cosine distance to the query in every mode;
        ``Hit.rank_score`` is the mode's own score (fused relative score, BM25, or ``1 - distance``). Pass ``embedding``
        to search with a precomputed vector instead of ``embed(query)``.

        ``adapter`` (a :class:`~marrow.adapters.QueryAdapter`, trained from feedback) maps the query vector with
        the server's ``apply_lora`` before the vector search. ``descendants=True`` searches the namespaces below
        ``namespace`` too (all agents and runs of a
        :func:`scope` user). Access is appended to ``memory_access_log`` (one ingest), never written into
        ``memories``. A namespace without memories gives ``[]``; an empty query or an unknown mode raises
        :class:`InvalidArgumentError`.
        """
        sql, params = self.search_sql(
            query, namespace, k, filters, mode=mode, embedding=embedding, descendants=descendants, adapter=adapter
        )
        table = self.db.sql(sql, params)
        hits = []
        for r in table.to_pylist():
            # A memory stored without an embedding (by SQL on a server without a model) has no distance.
            distance = math.inf if r["_distance"] is None else float(r["_distance"])
            rank = float(r["_rank"]) if "_rank" in r else 1.0 - distance
            hits.append(Hit(MemoryRecord.from_row(r), distance, rank_score=rank))
        if hits and log_access:
            self.log_access(hits, namespace, query)
        return hits

    def search_sql(
        self,
        query: Optional[str],
        namespace: str,
        k: int,
        filters: Optional[Mapping[str, Any]] = None,
        *,
        mode: Optional[str] = None,
        embedding: Optional[Sequence[float]] = None,
        descendants: bool = False,
        adapter: Optional[QueryAdapter] = None,
    ) -> tuple[str, list[Any]]:
        """The statement :meth:`recall` runs and its parameters: the ``k`` best memories with the columns of
        ``MEMORY_COLUMNS``, ``_distance`` (cosine distance to the query) and, except in vector mode, ``_rank`` (the
        mode's score, higher is better), best first. Other retrieval (the conditioner's candidate pool) builds on it."""
        _validate.int_in_range(k, "k", 1, 10_000)
        vector = _validate.embedding(embedding, self.dimension)
        if vector is None or query is not None:
            _validate.text(query, "query")
        _validate.namespace(namespace)
        mode = self.resolve_mode(query, mode, embedding)
        text = query or ""
        params: list[Any] = []
        where = self._where(namespace, filters, params, descendants)
        # Text and vector are parameters, so one prepared statement per (mode, k, filters) serves every query and
        # the server's plan cache sees one statement.
        if vector is not None and adapter is not None and mode == "hybrid":
            # A $n nested in a table function's argument binds as text: the vector goes in as a literal.
            target = _vector_literal(vector)
        elif vector is not None:
            params.append(vector.tolist())
            target = f"${len(params)}"
        else:
            params.append(text)
            target = f"embed(${len(params)})"
        if adapter is not None:
            target = adapter.sql(target)
        if mode == "vector":
            sql = (
                f"SELECT {MEMORY_COLUMNS}, cosine_distance(embedding, {target}) AS _distance FROM memories"
                f" WHERE {where} ORDER BY _distance LIMIT {k}"
            )
            return sql, params
        # The question as words (Lance's match query): quotes, + and - in what people and agents ask are text,
        # not the full-text operators a hand-written fts_search query may use.
        params.append(json.dumps({"match": {"terms": text, "fuzziness": 0}}))
        words = f"${len(params)}"
        if mode == "keyword":
            sql = (
                f"SELECT {MEMORY_COLUMNS}, cosine_distance(embedding, {target}) AS _distance,"
                f" CAST(_score AS DOUBLE) AS _rank FROM fts_search('memories', 'content', {words}, {k})"
                f" WHERE {where} ORDER BY _score DESC LIMIT {k}"
            )
        else:
            # Relative-score fusion over at least HYBRID_WINDOW candidates a side (docs/sql.md: on LoCoMo, R@5
            # 0.569 against reciprocal rank's 0.551); hybrid_search gives every row its distance to the query.
            window = max(k, HYBRID_WINDOW)
            sql = (
                f"SELECT {MEMORY_COLUMNS}, _distance, _score AS _rank FROM hybrid_search('memories', 'content',"
                f" 'embedding', {words}, {target}, {k}, 'relative', 1, 1, {window})"
                f" WHERE {where} ORDER BY _score DESC LIMIT {k}"
            )
        return sql, params

    def resolve_mode(
        self, query: Optional[str], mode: Optional[str], embedding: Optional[Sequence[float]] = None
    ) -> str:
        """The recall mode a search runs in: ``mode`` checked, or the default (hybrid with query text and a
        full-text index, else vector)."""
        if mode is None:
            mode = "hybrid" if query is not None and self.has_text_index() else "vector"
        if mode not in RECALL_MODES:
            raise InvalidArgumentError(f"unknown recall mode {mode!r}; use one of {list(RECALL_MODES)}")
        if mode != "vector" and query is None:
            raise InvalidArgumentError(f"recall mode {mode!r} needs query text", grpc_code="INVALID_ARGUMENT")
        return mode

    def has_text_index(self) -> bool:
        """Whether ``memories.content`` has a full-text (INVERTED) index (asked once per :class:`Memory`)."""
        if self._text_index is None:
            self._text_index = bool(
                self.db.scalar(
                    "SELECT count(*) FROM marrow_indexes() WHERE table_name = 'memories' AND column_name = 'content'"
                    " AND kind = 'INVERTED'"
                )
            )
        return self._text_index

    def log_access(self, hits: Sequence[Hit], namespace: str, query: Optional[str]) -> None:
        """Append one access-log row per hit (see ``access_log``)."""
        if self.access_log == "off":
            return
        rows = pa.table(
            {
                "memory_id": pa.array([h.id for h in hits], pa.string()),
                "namespace": pa.array([namespace] * len(hits), pa.string()),
                "query": pa.array([query] * len(hits), pa.string()),
                "rank": pa.array(range(1, len(hits) + 1), pa.int32()),
                "distance": pa.array([h.distance for h in hits], pa.float64()),
            }
        )
        if self._appender is not None:
            self._appender.append(rows)
            return
        self._access_buffer.append(rows)
        if len(self._access_buffer) >= self.access_flush_every:
            self.flush_access_log()

    def flush_access_log(self) -> int:
        """Send the access-log rows not sent yet and wait until they are written; the number written."""
        if self._appender is not None:
            before = self._appender.rows_written
            self._appender.flush()
            return self._appender.rows_written - before
        if not self._access_buffer:
            return 0
        table = pa.concat_tables(self._access_buffer)
        self._access_buffer = []
        return self.db.ingest("memory_access_log", table)

    def close(self) -> None:
        """Write the access-log rows not sent yet and stop the background writer (the client stays open)."""
        self.flush_access_log()
        if self._appender is not None:
            self._appender.close()
            self._appender = None
            self.access_log = "sync"

    def history(self, memory_id: str) -> list[MemoryEvent]:
        """Every recorded change of a memory, oldest first (from ``memory_events``)."""
        _validate.text(memory_id, "memory id")
        rows = self.db.sql(
            "SELECT id, memory_id, namespace, operation, old_content, new_content, related_id, actor, at, details"
            " FROM memory_events WHERE memory_id = $1 ORDER BY at, operation",
            [memory_id],
        ).to_pylist()
        if not rows:
            raise NotFoundError(f"no history for memory {memory_id!r}", grpc_code="NOT_FOUND")
        return [MemoryEvent.from_row(r) for r in rows]

    # -- maintenance -----------------------------------------------------------------------------------------
    def consolidate(
        self,
        namespace: str,
        threshold: float = 0.1,
        *,
        k: int = 4,
        dry_run: bool = False,
        judge: Optional[Judge] = None,
    ) -> list[Merge]:
        """Fold near-duplicate memories of ``namespace`` together and let corrections replace what they correct.

        Candidates are pairs within cosine distance ``threshold``, from one batch nearest-neighbour query
        (``vector_search_batch`` of the namespace's vectors against themselves, each memory's ``k`` nearest; not an
        O(n²) self-join). Embedding distance cannot tell "dentist on Monday" from "dentist on Tuesday", so each pair
        goes to ``judge(older, newer)``, which answers ``"duplicate"`` (the same fact), ``"contradiction"`` (the
        fact changed) or ``"distinct"`` (both stay). The default judge reads the words (:func:`judge_by_words`);
        pass a callable (e.g. an LLM prompt) for a better one. A contradiction keeps the **newer** memory and
        supersedes the older; a duplicate keeps the one with more to say (the newer on a tie). Nothing newer is
        ever replaced by something older. Pairs are taken closest first; a memory merges at most once per run.

        The keeper takes the group's maximum importance, summed access count and ``metadata.merged_from``; each
        merged memory's access-log and feedback rows move to it. Both sides get events (``merge`` on the keeper
        with the merged text, ``merged_into`` or ``superseded_by`` on the merged id). All merges of one run are
        one write per table (events, keepers, deletions, access log, feedback), not a few statements per merge.
        ``dry_run=True`` returns the plan and writes nothing.
        """
        if not 0.0 <= threshold < 2.0:
            raise InvalidArgumentError(f"threshold is a cosine distance in [0, 2), got {threshold!r}")
        _validate.int_in_range(k, "k", 2, 100)
        _validate.namespace(namespace)
        judge = judge or judge_by_words
        if not callable(judge):
            raise InvalidArgumentError(
                "judge must be a callable (older, newer) -> 'duplicate', 'contradiction' or 'distinct'"
            )
        pairs = self._near_pairs(namespace, threshold, k)
        if not pairs:
            return []
        ids = sorted({p[0] for p in pairs} | {p[1] for p in pairs})
        marks = ", ".join(f"${i + 1}" for i in range(len(ids)))
        records = {
            r["id"]: MemoryRecord.from_row(r)
            for r in self.db.sql(f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id IN ({marks})", ids).to_pylist()
        }
        merges: list[Merge] = []
        gone: set[str] = set()
        for a, b, distance in sorted(pairs, key=lambda p: (p[2], p[0], p[1])):
            if a in gone or b in gone or a not in records or b not in records:
                continue
            # Written in one batch, two memories share created_at: the more important then counts as the newer.
            older, newer = sorted((records[a], records[b]), key=lambda r: (r.created_at, r.importance, r.id))
            verdict = judge(older, newer)
            if verdict not in ("duplicate", "contradiction", "distinct"):
                raise InvalidArgumentError(
                    f"the judge answered {verdict!r} for ({older.id}, {newer.id}); expected 'duplicate',"
                    " 'contradiction' or 'distinct'"
                )
            if verdict == "distinct":
                continue
            keeper, loser = newer, older
            if verdict == "duplicate" and len(_content_words(older.content)) > len(_content_words(newer.content)):
                keeper, loser = older, newer
            # A loser that absorbed others earlier in the run takes them along (see _apply_merges).
            gone.add(loser.id)
            merges.append(Merge(keeper.id, loser.id, distance, verdict))
        # Chains (c into b, then b into a) resolve to the memory that stays.
        final = {m.merged: m.kept for m in merges}
        for merged in final:
            while final[merged] in final:
                final[merged] = final[final[merged]]
        merges = [replace(m, kept=final[m.merged]) for m in merges]
        if dry_run or not merges:
            return merges
        self._apply_merges(namespace, merges, records)
        return merges

    def _near_pairs(self, namespace: str, threshold: float, k: int) -> list[tuple[str, str, float]]:
        """(a, b, distance) with a < b for memories of the namespace within ``threshold`` of each other."""
        tmp = f"_marrow_consolidate_{uuid.uuid4().hex}"
        # vector_search_batch takes table names (not views): a temporary table holds the namespace's rows, and
        # searching it against itself keeps neighbours inside the namespace.
        self.db.execute(
            f"CREATE TABLE {tmp} AS SELECT id, embedding FROM memories"
            f" WHERE namespace = {quote_literal(namespace)} AND embedding IS NOT NULL AND {LIVE}"
        )
        try:
            rows = self.db.sql(
                f"SELECT query_id, id, _distance FROM vector_search_batch('{tmp}', 'embedding', '{tmp}',"
                f" 'embedding', {k}) WHERE id <> query_id AND _distance <= {float(threshold)!r}"
            ).to_pylist()
        finally:
            self.db.execute(f"DROP TABLE {tmp}")
        best: dict[tuple[str, str], float] = {}
        for r in rows:
            a, b = sorted((r["query_id"], r["id"]))
            best[(a, b)] = min(best.get((a, b), 2.0), float(r["_distance"]))
        return [(a, b, d) for (a, b), d in best.items()]

    def _apply_merges(
        self,
        namespace: str,
        merges: list[Merge],
        records: Mapping[str, MemoryRecord],
    ) -> None:
        """Write a consolidation plan: events first (a failure later leaves events and both memories, and the next
        run merges again), then the keepers, then the deletions, then the rows that point at merged memories."""
        final = {m.merged: m.kept for m in merges}
        keepers = sorted({final[m.merged] for m in merges})
        by_keeper: dict[str, list[MemoryRecord]] = {key: [] for key in keepers}
        for merged, kept in final.items():
            by_keeper[kept].append(records[merged])
        events: dict[str, list[Any]] = {
            f: [] for f in ("memory_id", "operation", "old_content", "new_content", "related_id", "details")
        }

        def event(memory_id: str, op: str, old: Optional[str], new: Optional[str], related: str, d: Any) -> None:
            for f, v in zip(events, (memory_id, op, old, new, related, json.dumps(d, default=str)), strict=True):
                events[f].append(v)

        for m in merges:
            winner, loser = records[m.kept], records[m.merged]
            details = {"distance": m.distance, "relation": m.relation}
            event(winner.id, "merge", loser.content, winner.content, loser.id, details)
            op = "superseded_by" if m.relation == "contradiction" else "merged_into"
            event(loser.id, op, loser.content, None, winner.id, details)
        n = len(events["memory_id"])
        self.db.ingest(
            "memory_events",
            pa.table({**events, "namespace": [namespace] * n, "actor": [self.actor] * n}),
        )
        plan = pa.table(
            {
                "id": keepers,
                "importance": [max(r.importance for r in [records[key], *by_keeper[key]]) for key in keepers],
                "access_count": [sum(r.access_count for r in [records[key], *by_keeper[key]]) for key in keepers],
                "metadata": [
                    json.dumps(
                        {
                            **records[key].metadata,
                            "merged_from": sorted(
                                set(records[key].metadata.get("merged_from", []))
                                | {r.id for r in by_keeper[key]}
                                | {x for r in by_keeper[key] for x in r.metadata.get("merged_from", [])}
                            ),
                        },
                        sort_keys=True,
                    )
                    for key in keepers
                ],
            }
        )
        moves = pa.table({"merged": list(final), "kept": [final[m] for m in final]})
        tmp = f"_marrow_merge_{uuid.uuid4().hex}"
        self.db.ingest(tmp + "_keep", plan, mode="create")
        try:
            self.db.ingest(tmp + "_move", moves, mode="create")
            try:
                self.db.execute(
                    "UPDATE memories SET importance = p.importance, access_count = p.access_count,"
                    f" metadata = p.metadata, updated_at = now() FROM {tmp}_keep p WHERE p.id = memories.id"
                )
                self.db.execute(f"DELETE FROM memories WHERE id IN (SELECT merged FROM {tmp}_move)")
                self.flush_access_log()
                for table in ("memory_access_log", "memory_feedback"):
                    if table == "memory_feedback" and not self.db.table_exists(table):
                        continue
                    self.db.execute(
                        f"UPDATE {table} SET memory_id = m.kept FROM {tmp}_move m WHERE m.merged = {table}.memory_id"
                    )
            finally:
                self.db.execute(f"DROP TABLE {tmp}_move")
        finally:
            self.db.execute(f"DROP TABLE {tmp}_keep")

    def maintain(self, namespace: Optional[str] = None) -> MaintenanceReport:
        """Delete expired memories (each gets an ``expire`` event: the history keeps it), then fold the access log
        into ``memories.access_count`` / ``last_accessed_at`` (the router's L4 step).

        Three statements: claim the unclaimed log rows with a fresh ``fold_batch`` id; add each memory's count and
        latest access from that batch; delete the batch. Rows appended meanwhile stay unclaimed for the next run.
        A failure between the last two statements re-folds the batch next time (at-least-once), never loses it.
        """
        self.flush_access_log()
        scope = ""
        params: list[Any] = []
        if namespace is not None:
            _validate.namespace(namespace)
            params.append(namespace)
            scope = " AND namespace = $2"
        expired = self._expire(namespace)
        batch = uuid.uuid4().hex
        # Claim: batches left by a failed run are folded too (they're not NULL and not deleted).
        self.db.execute(
            f"UPDATE memory_access_log SET fold_batch = $1 WHERE fold_batch IS NULL{scope}", [batch, *params]
        )
        claimed = (
            self.db.sql(
                "SELECT DISTINCT fold_batch FROM memory_access_log WHERE fold_batch IS NOT NULL"
                + (" AND namespace = $1" if namespace is not None else ""),
                params,
            )
            .column(0)
            .to_pylist()
        )
        if not claimed:
            return MaintenanceReport(0, 0, expired)
        in_batches = "fold_batch IN (" + ", ".join(quote_literal(str(b)) for b in claimed) + ")"
        rows = int(self.db.scalar(f"SELECT count(*) FROM memory_access_log WHERE {in_batches}"))
        touched = self.db.execute(
            "UPDATE memories SET"
            f" access_count = access_count + (SELECT count(*) FROM memory_access_log l"
            f" WHERE l.memory_id = memories.id AND l.{in_batches}),"
            f" last_accessed_at = (SELECT max(l.at) FROM memory_access_log l"
            f" WHERE l.memory_id = memories.id AND l.{in_batches})"
            f" WHERE id IN (SELECT memory_id FROM memory_access_log WHERE {in_batches})"
        )
        self.db.execute(f"DELETE FROM memory_access_log WHERE {in_batches}")
        return MaintenanceReport(rows, touched, expired)

    def _expire(self, namespace: Optional[str]) -> int:
        """Delete the memories past ``expires_at``; their events come first, so a failure in between leaves a
        memory with an extra event, never a deleted one without its event. Returns how many were deleted."""
        # One instant for the selection and the delete: a memory expiring in between waits for the next run.
        params: list[Any] = [datetime.now(timezone.utc)]
        where = "expires_at <= $1"
        if namespace is not None:
            params.append(namespace)
            where += " AND namespace = $2"
        rows = self.db.sql(f"SELECT id, namespace, content, expires_at FROM memories WHERE {where}", params).to_pylist()
        if not rows:
            return 0
        self._removal_events(rows, "expire", [{"expires_at": str(r["expires_at"])} for r in rows])
        return self.db.execute(f"DELETE FROM memories WHERE {where}", params)


def _vector_literal(vector: np.ndarray) -> str:
    """A vector as a SQL array literal (``repr`` of a float round-trips exactly)."""
    return "[" + ", ".join(repr(float(x)) for x in vector) + "]"
