"""MemoryConditioner: retrieval as one SQL query scoring relevance, recency and importance (Generative Agents).

For a query ``q`` and a memory ``m`` of the candidate pool::

    relevance(m)  = the search's own score of m (fused relative score in hybrid mode, BM25 in keyword mode, 1 - cosine
                    distance in vector mode), scaled to [0, 1] over the pool (best 1, worst 0)
    recency(m)    = 0.5 ** (hours since coalesce(m.last_accessed_at, m.created_at) / half_life_hours)
    importance(m) = m.importance
    feedback(m)   = (helpful - unhelpful judgments of m) / (judgments + 2), in (-1, 1): what was learned about
                    this memory itself
    score(m)      = w_rel · relevance + w_rec · recency + w_imp · importance + W_FEEDBACK · feedback

The query takes a candidate pool of ``pool`` memories from :meth:`Memory.recall`'s search (hybrid keyword + vector
by default, the namespace, expiry and filters as its prefilter) and ranks the pool by ``score`` in SQL; the ``k``
best are the conditioned context. The default weights put relevance first (0.8 against 0.1 and 0.1): importance and
recency break near-ties and never lift an unrelated memory over a relevant one. ``last_accessed_at`` is what
maintenance folded from the access log, so recency is "recently used" once maintenance has run and "recently
written" before.

**Weights live in ``conditioner_weights``** (one row per namespace; the row ``'*'`` is the default for namespaces
without one; without either the constructor's defaults apply). They are read on every call, so a change made by SQL
or by :meth:`MemoryConditioner.learn` in another process applies at once, without a restart.

**Learning** (:meth:`MemoryConditioner.learn`), from the namespace's ``memory_feedback`` rows not yet applied —
each says whether a retrieved memory helped, with its three features at feedback time. For each feature ``f``::

    Δ_f = mean(f | helpful) - mean(f | not helpful)
    w_f ← max(w_min, w_f + learning_rate · Δ_f),   then w ← w / Σ w

(a Rocchio-style step toward what separates helpful memories from unhelpful ones). It needs both kinds of feedback;
with one kind only, nothing changes and the rows stay pending.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence

import pyarrow as pa

from . import _params, _schema, _validate
from .client import quote_literal
from .errors import InvalidArgumentError, NotFoundError
from .memory import Memory
from .records import Hit, MemoryRecord

if TYPE_CHECKING:
    from .adapters import QueryAdapter

__all__ = ["ConditionedContext", "MemoryConditioner", "ScoredMemory", "Weights"]

W_MIN = 0.02
#: Weight of the per-memory feedback feature.
W_FEEDBACK = 0.2


@dataclass(frozen=True)
class Weights:
    """The conditioner's parameters for one namespace (``source``: the row they came from, or ``defaults``)."""

    w_relevance: float = 0.8
    w_recency: float = 0.1
    w_importance: float = 0.1
    half_life_hours: float = 72.0
    pool: int = 30
    learning_rate: float = 0.5
    updates: int = 0
    source: str = "defaults"

    def __post_init__(self) -> None:
        ws = (self.w_relevance, self.w_recency, self.w_importance)
        if any(w < 0 for w in ws) or sum(ws) <= 0:
            raise InvalidArgumentError("weights must be >= 0 and not all 0")
        if self.half_life_hours <= 0 or self.pool < 1 or self.learning_rate < 0:
            raise InvalidArgumentError("half_life_hours > 0, pool >= 1 and learning_rate >= 0 are required")


# Conditioned retrieval returns the same Hit as recall (with its recency and score set); the old name stays for one
# release.
ScoredMemory = Hit


@dataclass(frozen=True)
class ConditionedContext:
    """The ``k`` best memories by score, and the distances of the whole candidate pool (nearest first), which the
    uncertainty estimator reads."""

    query: str
    namespace: str
    items: list[Hit]
    pool_distances: list[float]
    weights: Weights
    access_logged: bool = field(default=False)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.items]

    @property
    def text(self) -> str:
        """The context as prompt text, one memory per line, best first."""
        return "\n".join(f"- {i.content}" for i in self.items)


class MemoryConditioner:
    """Builds and runs the conditioned retrieval query; stores feedback and learns its weights from it."""

    def __init__(self, memory: Memory, *, defaults: Optional[Weights] = None, weights_ttl: float = 5.0) -> None:
        self.memory = memory
        self.db = memory.db
        self.defaults = defaults or Weights()
        # condition() reuses weights read less than weights_ttl seconds ago (one round trip less per retrieval);
        # weights() and learn() always read the table.
        self.weights_ttl = float(weights_ttl)
        self._weights: _params.Recent[Weights] = _params.Recent()
        _schema.ensure_tables(self.db, *_schema.CONDITIONER)

    # -- weights ---------------------------------------------------------------------------------------------
    def weights(self, namespace: str, *, max_age: float = 0.0) -> Weights:
        """The namespace's weights (its row, else ``'*'``, else the defaults), read from the table unless read less
        than ``max_age`` seconds ago."""
        return self._weights.get(
            namespace, max_age, lambda: _params.load(self.db, "conditioner_weights", namespace, self.defaults)
        )

    def set_weights(self, namespace: str, weights: Weights) -> None:
        """Store ``weights`` for ``namespace`` (``'*'`` for the default row)."""
        _params.store(self.db, "conditioner_weights", namespace, weights)
        self._weights.forget()

    # -- retrieval -------------------------------------------------------------------------------------------
    def query_sql(self, weights: Weights, pool_sql: str, namespace: str, mode: str) -> str:
        """The SQL of a conditioned retrieval: ``pool_sql`` (a :meth:`Memory.search_sql` statement in ``mode``) is
        the candidate pool, ranked here by ``score``."""
        raw = "1.0 - _distance" if mode == "vector" else "_rank"
        return f"""WITH pool AS ({pool_sql}),
judged AS (
    SELECT memory_id, sum(CASE WHEN helpful THEN 1.0 ELSE -1.0 END) / (count(*) + 2.0) AS feedback
    FROM memory_feedback WHERE namespace = {quote_literal(namespace)} GROUP BY memory_id),
features AS (
    SELECT pool.*, coalesce({raw}, 0.0) AS raw_relevance, coalesce(judged.feedback, 0.0) AS feedback,
           power(0.5, (date_part('epoch', now()) - date_part('epoch', coalesce(last_accessed_at, created_at)))
                      / 3600.0 / {float(weights.half_life_hours)!r}) AS recency
    FROM pool LEFT JOIN judged ON judged.memory_id = pool.id),
scaled AS (
    SELECT *, CASE WHEN max(raw_relevance) OVER () > min(raw_relevance) OVER ()
                   THEN (raw_relevance - min(raw_relevance) OVER ())
                        / (max(raw_relevance) OVER () - min(raw_relevance) OVER ())
                   ELSE 1.0 END AS relevance
    FROM features)
SELECT *, {float(weights.w_relevance)!r} * relevance + {float(weights.w_recency)!r} * recency
          + {float(weights.w_importance)!r} * importance + {W_FEEDBACK!r} * feedback AS score
FROM scaled ORDER BY score DESC, _distance ASC NULLS LAST, id"""

    def condition(
        self,
        query: str,
        namespace: str,
        k: int = 5,
        *,
        embedding: Optional[Sequence[float]] = None,
        log_access: bool = True,
        mode: Optional[str] = None,
        filters: Optional[Mapping[str, Any]] = None,
        adapter: Optional[QueryAdapter] = None,
        descendants: bool = False,
    ) -> ConditionedContext:
        """The ``k`` best memories for ``query`` by ``score`` (module docstring), with the current weights.

        The candidate pool is :meth:`Memory.recall`'s search (``mode``: hybrid by default, ``filters``: mem0's
        filter language; expired memories are never candidates) for ``pool`` memories.

        ``adapter`` maps the query vector (:meth:`Memory.recall`); ``descendants`` searches the namespaces below.
        The returned memories are logged to the access log like :meth:`Memory.recall`'s. A namespace without
        memories gives an empty context; an empty query raises :class:`InvalidArgumentError` and writes nothing.
        """
        if not isinstance(k, int) or k < 1:
            raise InvalidArgumentError(f"k must be a positive integer, got {k!r}")
        if embedding is None:
            _validate.text(query, "query")
        _validate.namespace(namespace)
        weights = self.weights(namespace, max_age=self.weights_ttl)
        mode = self.memory.resolve_mode(query or None, mode, embedding)
        pool_sql, params = self.memory.search_sql(
            query or None,
            namespace,
            max(int(weights.pool), k),
            filters,
            mode=mode,
            embedding=embedding,
            adapter=adapter,
            descendants=descendants,
        )
        rows = self.db.sql(self.query_sql(weights, pool_sql, namespace, mode), params).to_pylist()
        items = [
            Hit(
                memory=MemoryRecord.from_row(r),
                distance=math.inf if r["_distance"] is None else float(r["_distance"]),
                recency=float(r["recency"]),
                score=float(r["score"]),
                relevance_feature=float(r["relevance"]),
                feedback=float(r["feedback"]),
            )
            for r in rows[: max(k, 0)]
        ]
        pool = sorted(math.inf if r["_distance"] is None else float(r["_distance"]) for r in rows)
        logged = False
        if items and log_access:
            self.memory.log_access(items, namespace, query)
            logged = True
        return ConditionedContext(query or "", namespace, items, pool, weights, logged)

    # -- feedback and learning -------------------------------------------------------------------------------
    def feedback(self, namespace: str, query: str, judgments: Mapping[str, bool]) -> int:
        """Record whether each memory (id → helpful) helped answer ``query``; returns the rows written.

        The features are recomputed in SQL for the named memories; a memory that does not exist in the namespace
        raises :class:`NotFoundError` and nothing is written.
        """
        _validate.namespace(namespace)
        _validate.text(query, "query")
        if not judgments:
            raise InvalidArgumentError("feedback needs at least one memory id")
        ids = list(judgments)
        for i in ids:
            _validate.text(i, "memory id")
        weights = self.weights(namespace)
        marks = ", ".join(f"${n + 3}" for n in range(len(ids)))
        rows = self.db.sql(
            "SELECT id, greatest(0.0, 1.0 - cosine_distance(embedding, embed($1))) AS relevance,"
            " power(0.5, (date_part('epoch', now()) - date_part('epoch', coalesce(last_accessed_at, created_at)))"
            f" / 3600.0 / {float(weights.half_life_hours)!r}) AS recency, importance"
            f" FROM memories WHERE namespace = $2 AND id IN ({marks})",
            [query, namespace, *ids],
        ).to_pylist()
        found = {r["id"]: r for r in rows}
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFoundError(
                f"feedback for unknown memories in namespace {namespace!r}: {missing}", grpc_code="NOT_FOUND"
            )
        table = pa.table(
            {
                "id": [str(uuid.uuid4()) for _ in ids],
                "namespace": [namespace] * len(ids),
                "memory_id": ids,
                "query": [query] * len(ids),
                "helpful": [bool(judgments[i]) for i in ids],
                "relevance": [float(found[i]["relevance"]) for i in ids],
                "recency": [float(found[i]["recency"]) for i in ids],
                "importance": [float(found[i]["importance"]) for i in ids],
            }
        )
        return self.db.ingest("memory_feedback", table)

    def feedback_on(self, context: ConditionedContext, helpful: Iterable[str]) -> int:
        """Feedback on a conditioned context: the listed ids helped, the context's other memories did not."""
        good = set(helpful)
        judgments: dict[str, bool] = {i: i in good for i in context.ids}
        for i in good - set(judgments):
            judgments[i] = True
        return self.feedback(context.namespace, context.query, judgments)

    def learn(self, namespace: str) -> Weights:
        """Apply the update rule (module docstring) to the namespace's pending feedback; the weights after it."""
        _validate.namespace(namespace)
        rows = self.db.sql(
            "SELECT id, helpful, relevance, recency, importance FROM memory_feedback"
            " WHERE namespace = $1 AND applied = false",
            [namespace],
        ).to_pylist()
        good = [r for r in rows if r["helpful"]]
        bad = [r for r in rows if not r["helpful"]]
        current = self.weights(namespace)
        if not good or not bad:
            return current

        def mean(rs: list[dict[str, Any]], f: str) -> float:
            return sum(float(r[f]) for r in rs) / len(rs)

        eta = current.learning_rate
        raw = {
            f: max(W_MIN, getattr(current, "w_" + f) + eta * (mean(good, f) - mean(bad, f)))
            for f in ("relevance", "recency", "importance")
        }
        total = sum(raw.values())
        new = Weights(
            w_relevance=raw["relevance"] / total,
            w_recency=raw["recency"] / total,
            w_importance=raw["importance"] / total,
            half_life_hours=current.half_life_hours,
            pool=current.pool,
            learning_rate=current.learning_rate,
            updates=current.updates + 1,
            source=namespace,
        )
        self.set_weights(namespace, new)
        ids = [r["id"] for r in rows]
        marks = ", ".join(f"${n + 1}" for n in range(len(ids)))
        self.db.execute(f"UPDATE memory_feedback SET applied = true WHERE id IN ({marks})", ids)
        return new
