"""EvolutionRouter: for each task, the cheapest level that should work, L0–L4, with every decision stored as a row.

For a query ``q`` in a namespace, with ``u`` the :class:`~marrow.uncertainty.UncertaintyEstimator` score of the
conditioned retrieval and thresholds ``t0 <= t1`` and ``t_adapter`` of the namespace:

- **L0** ``u <= t0``: answer from memory — the best memory is the answer, no model call needed.
- **L1** ``u <= t1``: retrieve and condition — the model answers with the conditioned context.
- **L2** otherwise, if the stored adapter whose description is nearest to ``q`` (``SELECT … FROM adapters ORDER BY
  cosine_distance(description_embedding, embed(q)) LIMIT 1``) is within ``t_adapter``: apply that adapter (with the
  context).
- **L3** otherwise: request a new adapter — a ``training_jobs`` row with the task and the SQL that selects its
  training examples. A similar open request (task within ``t_adapter``) is joined instead of duplicated.
- **L4** maintenance (:meth:`EvolutionRouter.maintain`, also run by :meth:`route` once the namespace's unfolded
  access-log rows reach ``maintenance_every``): fold the access log, consolidate near-duplicates, quantize (build
  the IVF_HNSW_SQ index — scalar-quantized vectors — once the table is big enough, else ``OPTIMIZE TABLE`` to fold
  new rows into it), compact.

**Tables.** ``router_thresholds`` (one row per namespace, ``'*'`` the default) is read on every decision, so a
change made by SQL or by :meth:`learn` elsewhere applies without a restart. ``router_decisions`` gets one row per
decision (level, action, uncertainty and its top similarity, adapter and its distance, job, the thresholds used, the
memories used), ``router_outcomes`` one per reported outcome, ``training_jobs`` one per L3 request; analyse them
with SQL and export them with :meth:`export_decisions`.

**Learning** (:meth:`learn`), from the namespace's outcomes not yet applied, per level ℓ with ``n_ℓ`` outcomes and
failure rate ``f_ℓ`` (``ε`` = ``target_failure_rate``, ``η`` = ``learning_rate``)::

    t ← clip(t + η · (ε - f_ℓ) · min(1, n_ℓ / 5), bounds)

for ``t0`` (L0 outcomes; bounds [0, t1]), ``t1`` (L1; [t0, 1]) and ``t_adapter`` (L2; [0, 2]): a level failing
more often than ``ε`` gets a stricter threshold (fewer tasks routed to it), one failing less gets a looser one, and
few outcomes move it less. L3/L4 outcomes are recorded but do not move thresholds.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any, Literal, Optional, Sequence

from . import _params, _schema, _validate
from .client import quote_literal
from .conditioner import ConditionedContext, MemoryConditioner
from .errors import InvalidArgumentError, NotFoundError
from .memory import MaintenanceReport, Memory, Merge
from .uncertainty import Uncertainty, UncertaintyEstimator

__all__ = ["Action", "AdapterMatch", "Decision", "EvolutionRouter", "Level", "MaintenanceResult", "Thresholds"]

# The tables the router reads and writes (all created by its constructor).
ROUTER_TABLES = _schema.ROUTER


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
    "maintenance",
]


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


@dataclass(frozen=True)
class MaintenanceResult:
    fold: MaintenanceReport
    merges: list[Merge]
    index: str
    compacted: list[str]
    decision_id: str


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
        _schema.ensure_tables(self.db, *_schema.ROUTER)

    # -- parameters ------------------------------------------------------------------------------------------
    def thresholds(self, namespace: str) -> Thresholds:
        """The namespace's thresholds as stored now (its row, else ``'*'``, else the defaults)."""
        return _params.load(self.db, "router_thresholds", namespace, self.defaults)

    def set_thresholds(self, namespace: str, t: Thresholds) -> None:
        """Store ``t`` for ``namespace`` (``'*'`` for the default row)."""
        _params.store(self.db, "router_thresholds", namespace, t)

    # -- routing ---------------------------------------------------------------------------------------------
    def best_adapter(self, query: str) -> Optional[AdapterMatch]:
        """The adapter whose description is nearest to ``query``, or None when there are none (or no
        ``adapters`` table on this server)."""
        if not self.db.table_exists("adapters"):
            return None
        rows = self.db.sql(
            "SELECT id, base_model, description, cosine_distance(description_embedding, embed($1)) AS _distance"
            " FROM adapters WHERE description_embedding IS NOT NULL ORDER BY _distance LIMIT 1",
            [query],
        ).to_pylist()
        if not rows:
            return None
        r = rows[0]
        return AdapterMatch(r["id"], float(r["_distance"]), r["base_model"], r["description"])

    def route(
        self, query: str, namespace: str, *, logprobs: Optional[Sequence[float]] = None, auto_maintain: bool = True
    ) -> Decision:
        """Decide how to handle ``query`` (module docstring), log the decision, and return it.

        Unknown namespace → :class:`NotFoundError`, empty query → :class:`InvalidArgumentError`; nothing is
        written then.
        """
        _validate.text(query, "query")
        _validate.text(namespace, "namespace")
        t = self.thresholds(namespace)
        ctx = self.conditioner.condition(query, namespace, self.k)
        unc = self.estimator.estimate(ctx.pool_distances[: self.k], logprobs)
        decision_id = str(uuid.uuid4())
        adapter: Optional[AdapterMatch] = None
        job_id: Optional[str] = None
        answer: Optional[str] = None
        level: Level
        action: Action
        if unc.score <= t.l0_max_uncertainty and ctx.items:
            level, action = Level.ANSWER_FROM_MEMORY, "answer_from_memory"
            answer = ctx.items[0].content
        elif unc.score <= t.l1_max_uncertainty:
            level, action = Level.RETRIEVE_AND_CONDITION, "retrieve_and_condition"
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
        if auto_maintain and self._unfolded(namespace) >= t.maintenance_every:
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
        )

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
        self.db.execute(
            "INSERT INTO router_decisions (id, namespace, query, level, action, uncertainty, top_similarity, adapter,"
            " adapter_distance, job_id, memory_ids, thresholds, details)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            [
                decision_id,
                namespace,
                query,
                int(level),
                action,
                None if unc is None else unc.score,
                None if unc is None else unc.top_similarity,
                None if adapter is None else adapter.name,
                None if adapter is None else adapter.distance,
                job_id,
                json.dumps(ctx.ids if ctx is not None else []),
                json.dumps(thresholds),
                json.dumps({"components": unc.components} if unc is not None else details or {}, default=str),
            ],
        )

    # -- outcomes and learning -------------------------------------------------------------------------------
    def record_outcome(self, decision_id: str, success: bool, note: Optional[str] = None) -> None:
        """Report whether a decision's handling worked (appended to ``router_outcomes``)."""
        _validate.text(decision_id, "decision id")
        rows = self.db.sql("SELECT namespace, level FROM router_decisions WHERE id = $1", [decision_id]).to_pylist()
        if not rows:
            raise NotFoundError(f"no router decision with id {decision_id!r}", grpc_code="NOT_FOUND")
        self.db.execute(
            "INSERT INTO router_outcomes (decision_id, namespace, level, success, note) VALUES ($1, $2, $3, $4, $5)",
            [decision_id, rows[0]["namespace"], int(rows[0]["level"]), bool(success), note],
        )

    def learn(self, namespace: str) -> Thresholds:
        """Apply the update rule (module docstring) to the namespace's pending outcomes; the thresholds after it."""
        _validate.text(namespace, "namespace")
        rows = self.db.sql(
            "SELECT level, count(*) AS n, sum(CASE WHEN success THEN 0 ELSE 1 END) AS failures"
            " FROM router_outcomes WHERE namespace = $1 AND applied = false GROUP BY level",
            [namespace],
        ).to_pylist()
        t = self.thresholds(namespace)
        if not rows:
            return t
        stats = {int(r["level"]): (int(r["n"]), int(r["failures"])) for r in rows}

        def step(level: Level) -> float:
            if level not in stats:
                return 0.0
            n, failures = stats[level]
            return t.learning_rate * (t.target_failure_rate - failures / n) * min(1.0, n / 5)

        t0 = t.l0_max_uncertainty + step(Level.ANSWER_FROM_MEMORY)
        t1 = t.l1_max_uncertainty + step(Level.RETRIEVE_AND_CONDITION)
        t0 = min(max(t0, 0.0), 1.0)
        t1 = min(max(t1, t0), 1.0)
        t0 = min(t0, t1)
        t2 = min(max(t.l2_max_adapter_distance + step(Level.APPLY_ADAPTER), 0.0), 2.0)
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
        return int(
            self.db.scalar(
                "SELECT count(*) FROM memory_access_log WHERE namespace = $1 AND fold_batch IS NULL", [namespace]
            )
        )

    def maintain(self, namespace: str) -> MaintenanceResult:
        """L4: fold the access log, consolidate, quantize (index), compact; logged as a level-4 decision."""
        self.memory.require_namespace(namespace)
        fold = self.memory.maintain(namespace)
        merges = self.memory.consolidate(namespace, self.consolidate_threshold)
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
        for table in ("memories", "memory_events", "memory_access_log"):
            self.db.execute(f"CALL compact_table({quote_literal(table)})")
            compacted.append(table)
        decision_id = str(uuid.uuid4())
        details = {
            "folded_rows": fold.folded_rows,
            "memories_touched": fold.memories_touched,
            "merged": [asdict(m) for m in merges],
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
        return MaintenanceResult(fold, merges, index, compacted, decision_id)

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
