"""EvolutionRouter: for each task, the cheapest level that should work, L0–L4, with every decision stored as a row.

For a query ``q`` in a namespace, with ``u`` the :class:`~marrow.uncertainty.UncertaintyEstimator` score of the
conditioned retrieval and thresholds ``t0 <= t1`` and ``t_adapter`` of the namespace:

- **L0** ``u <= t0``: answer from memory — the best memory is the answer, no model call needed.
- **L1** ``u <= t1``: retrieve and condition — the model answers with the conditioned context.
- **A missing fact** (``u > t1``, the query is a question — it ends with "?" or opens with a question word — and
  the best memory's similarity is below ``MISSING_FACT_SIMILARITY``, or there is no memory at all): nothing stored
  is about the question, and no adapter can supply a fact — the action is ``ask_or_remember`` (level 1): ask the
  user or a tool, then :meth:`Memory.remember` the answer. A task ("translate this clause") lacks a skill instead
  and goes on to L2/L3.
- **L2** otherwise, if the namespace has a query adapter (:mod:`marrow.adapters`, trained from its feedback) that
  measured a gain on held-out questions: retrieve again with it (``apply_lora`` on the server) and answer with that
  context. Else, if a stored adapter's description is nearest to ``q`` within ``t_adapter``: apply that adapter.
- **L3** otherwise: request an adapter — a ``training_jobs`` row (a similar open request is joined instead of
  duplicated). :meth:`EvolutionRouter.train` (run by :meth:`maintain`) consumes the namespace's open jobs: it trains
  a query adapter from the feedback the conditioner recorded and marks the jobs ``done``, or leaves them
  ``requested`` with the reason while there is too little feedback.
- **L4** maintenance (:meth:`EvolutionRouter.maintain`, also run by :meth:`route` once the namespace's unfolded
  access-log rows reach ``maintenance_every``): fold the access log, expire, consolidate, train requested
  adapters, quantize (build the IVF_HNSW_SQ index — scalar-quantized vectors — once the table is big enough, else
  ``OPTIMIZE TABLE`` to fold new rows into it), compact every table the layer writes.

**Round trips.** A decision costs one retrieval statement plus the access-log ingest (none when the memory buffers
it); thresholds are cached for ``thresholds_ttl`` seconds, decisions are written ``decision_flush_every`` at a time
(and before :meth:`record_outcome`, :meth:`learn`, :meth:`maintain` and :meth:`flush`), and the maintenance check
reads the server every ``maintenance_check_every`` decisions.

**Tables.** ``router_thresholds`` (one row per namespace, ``'*'`` the default) is read on every decision, so a
change made by SQL or by :meth:`learn` elsewhere applies without a restart. ``router_decisions`` gets one row per
decision (level, action, uncertainty and its top similarity, adapter and its distance, job, the thresholds used, the
memories used), ``router_outcomes`` one per reported outcome, ``training_jobs`` one per L3 request; analyse them
with SQL and export them with :meth:`export_decisions`.

**Learning** (:meth:`learn`), from the namespace's outcomes not yet applied, per level ℓ with ``n_ℓ`` outcomes of
which ``x_ℓ`` failed (``ε`` = ``target_failure_rate``, ``η`` = ``learning_rate``). The failure rate is smoothed
toward the target by a prior worth ``N0 = 5`` outcomes, ``f̂_ℓ = (x_ℓ + ε·N0) / (n_ℓ + N0)``, so the step
``η · (ε - f̂_ℓ)`` grows with the evidence: one outcome moves a threshold a sixth as far as a long record::

    t0 ← clip(t0 + η · (ε - f̂_0), [0, t1])          (L0 outcomes)
    t1 ← clip(t1 + η · (ε - f̂_1), [t0, 1])          (L1 outcomes, ask_or_remember excluded)
    t1 ← clip(t1 + η · max(0, ε - f̂_23), [t0, 1])   (L2 and L3 outcomes)
    t_adapter ← clip(t_adapter + η · (ε - f̂_2), [0, 2])

A level failing more often than ``ε`` gets a stricter threshold, one failing less a looser one. Tasks escalated to
L2/L3 that then succeed anyway (with the plain context or an adapter) show that ``t1`` is stricter than it needs to
be, so they loosen it; their failures do not tighten it (a hard task says nothing against L1).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import IntEnum
from typing import Any, Literal, Optional, Sequence

import pyarrow as pa

from . import _params, _schema, _validate, adapters
from .adapters import QueryAdapter
from .client import quote_literal
from .conditioner import ConditionedContext, MemoryConditioner
from .errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from .memory import MaintenanceReport, Memory, Merge
from .uncertainty import Uncertainty, UncertaintyEstimator

__all__ = ["Action", "AdapterMatch", "Decision", "EvolutionRouter", "Level", "MaintenanceResult", "Thresholds"]

# The tables the router reads and writes (all created by its constructor).
ROUTER_TABLES = _schema.ROUTER
# Every table the layer writes, which maintenance compacts (those that exist).
LAYER_TABLES = ("memories", *_schema.MEMORY, *_schema.CONDITIONER, *_schema.ROUTER, "adapters")


class Level(IntEnum):
    """A routing level; compares equal to its number, which is what ``router_decisions.level`` stores."""

    ANSWER_FROM_MEMORY = 0
    RETRIEVE_AND_CONDITION = 1
    APPLY_ADAPTER = 2
    REQUEST_ADAPTER = 3
    MAINTENANCE = 4


# What was done, as stored in ``router_decisions.action``; L3 either requests a new adapter or joins an open request.
Action = Literal[
    "answer_from_memory",
    "retrieve_and_condition",
    "apply_adapter",
    "request_adapter",
    "join_training_job",
    "ask_or_remember",
    "maintenance",
]

#: Below this similarity of the best memory, an uncertain question is about a fact the memory does not hold.
MISSING_FACT_SIMILARITY = 0.35
#: Outcomes the smoothed failure rate's prior is worth (see the module docstring).
PRIOR_OUTCOMES = 5.0


@dataclass(frozen=True)
class Thresholds:
    l0_max_uncertainty: float = 0.3
    l1_max_uncertainty: float = 0.6
    l2_max_adapter_distance: float = 0.5
    target_failure_rate: float = 0.2
    learning_rate: float = 0.1
    maintenance_every: int = 1000
    updates: int = 0
    source: str = "defaults"

    def __post_init__(self) -> None:
        if not 0.0 <= self.l0_max_uncertainty <= self.l1_max_uncertainty <= 1.0:
            raise InvalidArgumentError("need 0 <= l0_max_uncertainty <= l1_max_uncertainty <= 1")
        if not 0.0 <= self.l2_max_adapter_distance <= 2.0:
            raise InvalidArgumentError("l2_max_adapter_distance is a cosine distance in [0, 2]")
        if not 0.0 <= self.target_failure_rate <= 1.0 or self.learning_rate < 0 or self.maintenance_every < 1:
            raise InvalidArgumentError("bad target_failure_rate, learning_rate or maintenance_every")


@dataclass(frozen=True)
class AdapterMatch:
    """The nearest adapter: ``name`` is its ``adapters.id``."""

    name: str
    distance: float
    base_model: Optional[str]
    description: Optional[str]


@dataclass(frozen=True, kw_only=True)
class Decision:
    """One routing decision (also a row of ``router_decisions`` with the same ``id``)."""

    id: str
    namespace: str
    query: str
    level: Level
    action: Action
    uncertainty: Uncertainty
    context: ConditionedContext
    thresholds: Thresholds
    answer: Optional[str] = None
    adapter: Optional[AdapterMatch] = None
    job_id: Optional[str] = None
    maintenance: Optional[MaintenanceResult] = None
    #: The query adapter an L2 decision retrieved with.
    query_adapter: Optional[QueryAdapter] = None


@dataclass(frozen=True)
class MaintenanceResult:
    fold: MaintenanceReport
    merges: list[Merge]
    index: str
    compacted: list[str]
    decision_id: str
    #: Adapters trained for the namespace's open training jobs, and why none was when jobs stay open.
    trained: list[str] = field(default_factory=list)
    training_note: Optional[str] = None
    expired: int = 0


_QUESTION_WORDS = frozenset(
    "what who whom whose when where which why how is are was were do does did has have had can could will would"
    " should am".split()
)


def _asks_for_fact(query: str) -> bool:
    """Whether ``query`` is a question (it ends with "?" or opens with a question word) rather than a task such as
    "translate this": a question nothing in memory is about lacks a fact; a task lacks a skill."""
    words = query.strip().lower().split()
    return query.strip().endswith("?") or (bool(words) and words[0] in _QUESTION_WORDS)


def _measured_gain(metrics: dict[str, Any]) -> bool:
    """Whether a query adapter's training measured a gain: on held-out questions when it had enough of them,
    else on its training questions."""
    if "holdout_r5_after" in metrics:
        return float(metrics["holdout_r5_after"]) > float(metrics["holdout_r5_before"])
    return float(metrics.get("train_r5_after", 0.0)) > float(metrics.get("train_r5_before", 0.0))


class EvolutionRouter:
    """The L0–L4 policy of one Marrow database; see the module docstring for the rule and the tables."""

    def __init__(
        self,
        memory: Memory,
        *,
        conditioner: Optional[MemoryConditioner] = None,
        estimator: Optional[UncertaintyEstimator] = None,
        defaults: Optional[Thresholds] = None,
        k: int = 5,
        base_model: Optional[str] = None,
        examples_per_job: int = 256,
        index_min_rows: int = 5000,
        consolidate_threshold: float = 0.1,
        thresholds_ttl: float = 5.0,
        decision_flush_every: int = 16,
        maintenance_check_every: int = 50,
    ) -> None:
        self.memory = memory
        self.db = memory.db
        self.conditioner = conditioner or MemoryConditioner(memory)
        self.estimator = estimator or UncertaintyEstimator()
        self.defaults = defaults or Thresholds()
        self.k = k
        self.base_model = base_model
        self.examples_per_job = examples_per_job
        self.index_min_rows = index_min_rows
        self.consolidate_threshold = consolidate_threshold
        self.thresholds_ttl = float(thresholds_ttl)
        self.decision_flush_every = max(1, int(decision_flush_every))
        self.maintenance_check_every = max(1, int(maintenance_check_every))
        self._thresholds: _params.Recent[Thresholds] = _params.Recent()
        self._adapters: _params.Recent[Optional[QueryAdapter]] = _params.Recent()
        self._pending: list[dict[str, Any]] = []
        self._since_check: dict[str, int] = {}
        _schema.ensure_tables(self.db, *_schema.ROUTER)

    # -- parameters ------------------------------------------------------------------------------------------
    def thresholds(self, namespace: str, *, max_age: Optional[float] = 0.0) -> Thresholds:
        """The namespace's thresholds (its row, else ``'*'``, else the defaults), read from the table unless this
        router read them less than ``max_age`` seconds ago (:meth:`route` passes ``thresholds_ttl``)."""
        return self._thresholds.get(
            namespace, max_age or 0.0, lambda: _params.load(self.db, "router_thresholds", namespace, self.defaults)
        )

    def set_thresholds(self, namespace: str, t: Thresholds) -> None:
        """Store ``t`` for ``namespace`` (``'*'`` for the default row)."""
        _params.store(self.db, "router_thresholds", namespace, t)
        self._thresholds.forget()

    def query_adapter(self, namespace: str) -> Optional[QueryAdapter]:
        """The namespace's newest query adapter if it measured a gain on held-out questions (cached like the
        thresholds)."""

        def load() -> Optional[QueryAdapter]:
            qa = adapters.latest_query_adapter(self.memory, namespace) if self.db.table_exists("tensors") else None
            return qa if qa is not None and _measured_gain(qa.metrics) else None

        return self._adapters.get(namespace, self.thresholds_ttl, load)

    # -- routing ---------------------------------------------------------------------------------------------
    def best_adapter(self, query: str) -> Optional[AdapterMatch]:
        """The model adapter (not a query adapter) whose description is nearest to ``query``, or None when there are
        none (or no ``adapters`` table on this server)."""
        if not self.db.table_exists("adapters"):
            return None
        rows = self.db.sql(
            "SELECT id, base_model, description, cosine_distance(description_embedding, embed($1)) AS _distance"
            " FROM adapters WHERE description_embedding IS NOT NULL AND kind <> $2 ORDER BY _distance LIMIT 1",
            [query, adapters.QUERY_ADAPTER_KIND],
        ).to_pylist()
        if not rows:
            return None
        r = rows[0]
        return AdapterMatch(r["id"], float(r["_distance"]), r["base_model"], r["description"])

    def route(
        self, query: str, namespace: str, *, logprobs: Optional[Sequence[float]] = None, auto_maintain: bool = True
    ) -> Decision:
        """Decide how to handle ``query`` (module docstring), log the decision, and return it.

        A namespace without memories routes to ``ask_or_remember``; an empty query raises
        :class:`InvalidArgumentError` and writes nothing.
        """
        _validate.text(query, "query")
        _validate.namespace(namespace)
        t = self.thresholds(namespace, max_age=self.thresholds_ttl)
        ctx = self.conditioner.condition(query, namespace, self.k)
        unc = self.estimator.estimate(ctx.pool_distances[: self.k], logprobs)
        decision_id = str(uuid.uuid4())
        adapter: Optional[AdapterMatch] = None
        qa: Optional[QueryAdapter] = None
        job_id: Optional[str] = None
        answer: Optional[str] = None
        level: Level
        action: Action
        if unc.score <= t.l0_max_uncertainty and ctx.items:
            level, action = Level.ANSWER_FROM_MEMORY, "answer_from_memory"
            answer = ctx.items[0].content
        elif unc.score <= t.l1_max_uncertainty:
            level, action = Level.RETRIEVE_AND_CONDITION, "retrieve_and_condition"
        elif _asks_for_fact(query) and (not ctx.items or unc.top_similarity < MISSING_FACT_SIMILARITY):
            level, action = Level.RETRIEVE_AND_CONDITION, "ask_or_remember"
        else:
            qa = self.query_adapter(namespace)
            if qa is not None:
                level, action = Level.APPLY_ADAPTER, "apply_adapter"
                adapter = AdapterMatch(qa.id, 0.0, adapters.BASE_MODEL, f"query adapter v{qa.version}")
                ctx = self.conditioner.condition(query, namespace, self.k, adapter=qa)
            else:
                adapter = self.best_adapter(query)
                if adapter is not None and adapter.distance <= t.l2_max_adapter_distance:
                    level, action = Level.APPLY_ADAPTER, "apply_adapter"
                else:
                    level = Level.REQUEST_ADAPTER
                    job_id, joined = self._request_adapter(query, namespace, decision_id, t)
                    action = "join_training_job" if joined else "request_adapter"
        self._log(decision_id, namespace, query, level, action, unc, ctx, t, adapter=adapter, job_id=job_id)
        maintenance = None
        if auto_maintain and self._maintenance_due(namespace, t):
            maintenance = self.maintain(namespace)
        return Decision(
            id=decision_id,
            namespace=namespace,
            query=query,
            level=level,
            action=action,
            uncertainty=unc,
            context=ctx,
            thresholds=t,
            answer=answer,
            adapter=adapter,
            job_id=job_id,
            maintenance=maintenance,
            query_adapter=qa,
        )

    def _maintenance_due(self, namespace: str, t: Thresholds) -> bool:
        """Whether the namespace's unfolded access-log rows reached ``maintenance_every``, asked of the server
        every ``maintenance_check_every`` decisions (and on a router's first decision for the namespace)."""
        n = self._since_check.get(namespace)
        if n is not None and n + 1 < self.maintenance_check_every:
            self._since_check[namespace] = n + 1
            return False
        self._since_check[namespace] = 0
        return self._unfolded(namespace) >= t.maintenance_every

    def _request_adapter(self, task: str, namespace: str, decision_id: str, t: Thresholds) -> tuple[str, bool]:
        open_jobs = self.db.sql(
            "SELECT id, cosine_distance(embed(task), embed($1)) AS _distance FROM training_jobs"
            " WHERE namespace = $2 AND status = 'requested' ORDER BY _distance LIMIT 1",
            [task, namespace],
        ).to_pylist()
        if open_jobs and float(open_jobs[0]["_distance"]) <= t.l2_max_adapter_distance:
            return str(open_jobs[0]["id"]), True
        job_id = str(uuid.uuid4())
        # The examples are the namespace's memories nearest the task: a query the trainer runs when it starts.
        examples = (
            f"SELECT id, content FROM memories WHERE namespace = {quote_literal(namespace)}"
            f" ORDER BY cosine_distance(embedding, embed({quote_literal(task)})) LIMIT {int(self.examples_per_job)}"
        )
        self.db.execute(
            "INSERT INTO training_jobs (id, namespace, task, examples_sql, base_model, decision_id)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [job_id, namespace, task, examples, self.base_model, decision_id],
        )
        return job_id, False

    def _log(
        self,
        decision_id: str,
        namespace: str,
        query: Optional[str],
        level: Level,
        action: Action,
        unc: Optional[Uncertainty],
        ctx: Optional[ConditionedContext],
        t: Thresholds,
        *,
        adapter: Optional[AdapterMatch] = None,
        job_id: Optional[str] = None,
        details: Optional[dict[str, Any]] = None,
    ) -> None:
        thresholds = {k: v for k, v in asdict(t).items() if k != "source"}
        self._pending.append(
            {
                "id": decision_id,
                "namespace": namespace,
                "query": query,
                "level": int(level),
                "action": action,
                "uncertainty": None if unc is None else unc.score,
                "top_similarity": None if unc is None else unc.top_similarity,
                "adapter": None if adapter is None else adapter.name,
                "adapter_distance": None if adapter is None else adapter.distance,
                "job_id": job_id,
                "memory_ids": json.dumps(ctx.ids if ctx is not None else []),
                "thresholds": json.dumps(thresholds),
                "details": json.dumps(
                    {"components": unc.components} if unc is not None else details or {}, default=str
                ),
                # When it was decided, not when the buffer was written (``at`` is naive UTC, as now() stores it).
                "at": datetime.now(timezone.utc).replace(tzinfo=None),
            }
        )
        if len(self._pending) >= self.decision_flush_every or level in (Level.REQUEST_ADAPTER, Level.MAINTENANCE):
            self.flush()

    def flush(self) -> int:
        """Write the decisions this router still holds (one ingest); returns how many."""
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        columns = {name: [row[name] for row in pending] for name in pending[0]}
        types = {
            "at": pa.timestamp("ns"),
            "level": pa.int32(),
            "uncertainty": pa.float64(),
            "top_similarity": pa.float64(),
            "adapter_distance": pa.float64(),
        }
        table = pa.table({name: pa.array(values, types.get(name, pa.string())) for name, values in columns.items()})
        try:
            self.db.ingest("router_decisions", table)
        except Exception:
            self._pending = pending + self._pending
            raise
        return len(pending)

    def close(self) -> None:
        """Write what is buffered: the decisions and the memory's access log."""
        self.flush()
        self.memory.flush_access_log()

    # -- outcomes and learning -------------------------------------------------------------------------------
    def record_outcome(self, decision_id: str, success: bool, note: Optional[str] = None) -> None:
        """Report whether a decision's handling worked (appended to ``router_outcomes``)."""
        _validate.text(decision_id, "decision id")
        self.flush()
        rows = self.db.sql("SELECT namespace, level FROM router_decisions WHERE id = $1", [decision_id]).to_pylist()
        if not rows:
            raise NotFoundError(f"no router decision with id {decision_id!r}", grpc_code="NOT_FOUND")
        self.db.execute(
            "INSERT INTO router_outcomes (decision_id, namespace, level, success, note) VALUES ($1, $2, $3, $4, $5)",
            [decision_id, rows[0]["namespace"], int(rows[0]["level"]), bool(success), note],
        )

    def learn(self, namespace: str) -> Thresholds:
        """Apply the update rule (module docstring) to the namespace's pending outcomes; the thresholds after it."""
        _validate.namespace(namespace)
        self.flush()
        # Outcomes by level and kind: ask_or_remember decisions are level 1 but say nothing about t1; L2 and L3
        # outcomes count for t_adapter (L2) and, together, as "escalated" evidence on t1.
        rows = self.db.sql(
            "SELECT o.level, CASE WHEN d.action = 'ask_or_remember' THEN 'ask' ELSE 'plain' END AS kind,"
            " count(*) AS n, sum(CASE WHEN o.success THEN 0 ELSE 1 END) AS failures"
            " FROM router_outcomes o LEFT JOIN router_decisions d ON d.id = o.decision_id"
            " WHERE o.namespace = $1 AND o.applied = false GROUP BY o.level, 2",
            [namespace],
        ).to_pylist()
        # L2 and L3 outcomes also count, pooled, as escalations.
        rows += [{**r, "kind": "escalated"} for r in rows if int(r["level"]) in (2, 3) and r["kind"] == "plain"]
        t = self.thresholds(namespace)
        if not rows:
            return t
        stats: dict[int, tuple[int, int]] = {}
        for r in rows:
            level = 23 if int(r["level"]) in (2, 3) and r["kind"] == "escalated" else int(r["level"])
            if r["kind"] == "ask":
                continue
            n, x = stats.get(level, (0, 0))
            stats[level] = (n + int(r["n"]), x + int(r["failures"]))
        eps, eta = t.target_failure_rate, t.learning_rate

        def gap(level: int) -> float:
            """ε - f̂ for a level's outcomes (0 without any)."""
            if level not in stats:
                return 0.0
            n, failures = stats[level]
            return eps - (failures + eps * PRIOR_OUTCOMES) / (n + PRIOR_OUTCOMES)

        t0 = t.l0_max_uncertainty + eta * gap(Level.ANSWER_FROM_MEMORY)
        t1 = t.l1_max_uncertainty + eta * gap(Level.RETRIEVE_AND_CONDITION) + eta * max(0.0, gap(23))
        t0 = min(max(t0, 0.0), 1.0)
        t1 = min(max(t1, t0), 1.0)
        t0 = min(t0, t1)
        t2 = min(max(t.l2_max_adapter_distance + eta * gap(Level.APPLY_ADAPTER), 0.0), 2.0)
        new = Thresholds(
            l0_max_uncertainty=t0,
            l1_max_uncertainty=t1,
            l2_max_adapter_distance=t2,
            target_failure_rate=t.target_failure_rate,
            learning_rate=t.learning_rate,
            maintenance_every=t.maintenance_every,
            updates=t.updates + 1,
            source=namespace,
        )
        self.set_thresholds(namespace, new)
        self.db.execute(
            "UPDATE router_outcomes SET applied = true WHERE namespace = $1 AND applied = false", [namespace]
        )
        return new

    # -- L4 --------------------------------------------------------------------------------------------------
    def _unfolded(self, namespace: str) -> int:
        self.memory.flush_access_log()  # rows recall queued count too
        return int(
            self.db.scalar(
                "SELECT count(*) FROM memory_access_log WHERE namespace = $1 AND fold_batch IS NULL", [namespace]
            )
        )

    def train(self, namespace: str) -> tuple[list[str], Optional[str]]:
        """L3's trainer: if the namespace has open training jobs, train a query adapter from its feedback
        (:func:`marrow.adapters.train_query_adapter`) and mark the jobs ``done``; returns (adapter ids trained, why
        not when the jobs stay open)."""
        _validate.namespace(namespace)
        open_jobs = self.db.sql(
            "SELECT id FROM training_jobs WHERE namespace = $1 AND status = 'requested'", [namespace]
        ).to_pylist()
        if not open_jobs:
            return [], None
        ids = [r["id"] for r in open_jobs]
        try:
            qa = adapters.train_query_adapter(self.memory, namespace, jobs=ids)
        except FailedPreconditionError as e:
            return [], str(e)
        marks = ", ".join(f"${i + 1}" for i in range(len(ids)))
        # The adapter's metrics name the jobs it answers (adapters.metrics -> 'jobs').
        self.db.execute(f"UPDATE training_jobs SET status = 'done' WHERE id IN ({marks})", ids)
        self._adapters.forget(namespace)
        return [qa.id], None

    def maintain(self, namespace: str) -> MaintenanceResult:
        """L4: expire and fold the access log, consolidate, train requested adapters, quantize (index), compact
        every table the layer writes; logged as a level-4 decision."""
        _validate.namespace(namespace)
        self.flush()
        fold = self.memory.maintain(namespace)
        merges = self.memory.consolidate(namespace, self.consolidate_threshold) if self.memory.count(namespace) else []
        trained, note = self.train(namespace)
        indexed = self.db.sql(
            "SELECT index_name FROM marrow_indexes() WHERE table_name = 'memories' AND column_name = 'embedding'"
        ).to_pylist()
        if indexed:
            self.db.execute("OPTIMIZE TABLE memories")
            index = f"optimized {indexed[0]['index_name']}"
        elif self.memory.count() >= self.index_min_rows:
            # IVF_HNSW_SQ keeps 8-bit scalar-quantized vectors: the "quantize" step for memories.
            self.db.execute(
                "CREATE INDEX memories_embedding ON memories USING IVF_HNSW_SQ (embedding)"
                " WITH (metric = 'cosine', num_partitions = 16)"
            )
            index = "built memories_embedding (IVF_HNSW_SQ)"
        else:
            index = f"none (fewer than {self.index_min_rows} memories)"
        compacted = []
        for table in LAYER_TABLES:
            if table in ("memories",) or self.db.table_exists(table):
                self.db.execute(f"CALL compact_table({quote_literal(table)})")
                compacted.append(table)
        decision_id = str(uuid.uuid4())
        details = {
            "folded_rows": fold.folded_rows,
            "memories_touched": fold.memories_touched,
            "expired": fold.expired,
            "merged": [asdict(m) for m in merges],
            "trained": trained,
            "training_note": note,
            "index": index,
            "compacted": compacted,
        }
        self._log(
            decision_id,
            namespace,
            None,
            Level.MAINTENANCE,
            "maintenance",
            None,
            None,
            self.thresholds(namespace),
            details=details,
        )
        return MaintenanceResult(fold, merges, index, compacted, decision_id, trained, note, fold.expired)

    # -- analysis --------------------------------------------------------------------------------------------
    def export_decisions(self, path: str, namespace: Optional[str] = None) -> int:
        """``COPY`` the decision log (joined with outcomes) to ``path`` under the server's ``--export-root``
        (format from the extension: .parquet, .csv, .json, .arrow); the number of rows written."""
        where = f" WHERE d.namespace = {quote_literal(namespace)}" if namespace is not None else ""
        return self.db.execute(
            "COPY (SELECT d.id, d.namespace, d.query, d.level, d.action, d.uncertainty, d.top_similarity, d.adapter,"
            " d.adapter_distance, d.job_id, d.memory_ids, d.thresholds, d.details, d.at,"
            " o.success, o.note, o.at AS outcome_at"
            f" FROM router_decisions d LEFT JOIN router_outcomes o ON o.decision_id = d.id{where}"
            f" ORDER BY d.at) TO {quote_literal(path)}"
        )
