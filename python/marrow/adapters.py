"""Query adapters: what the brain learns from retrieval feedback, stored and applied like any LoRA adapter.

A query adapter maps a question's embedding before the search, ``q' = q + B·(A·q)`` with ``A`` r×d and ``B`` d×r
(the server's ``apply_lora`` SQL function), so that the memories judged helpful for a scope's questions rank higher
for its future questions. It is trained here, in numpy on the CPU, from the ``memory_feedback`` rows the
:class:`~marrow.conditioner.MemoryConditioner` already records: each question with helpful memories is a training
example whose positives are those memories and whose negatives are every other memory of the scope (a softmax over
the scope's memories at temperature ``tau``, the multi-positive InfoNCE loss), minimised with Adam and an L2 penalty
on both matrices (``weight_decay`` 0.1: a scope has tens of questions, and a strong pull toward the unchanged
embedding is what makes the gain carry over to questions it never saw). ``B`` starts at zero, so training starts from
the unchanged embedding.

Stored as a PEFT LoRA adapter of the embedding model: a row of ``adapters`` (``kind = 'query-lora'``, the scope,
version, a hash of the training data and the metrics in ``metrics``), its two tensors
(``base_model.model.query_embedding.lora_A.weight`` [r, d] and ``….lora_B.weight`` [d, r]) in ``tensors`` and a
``models`` row, so ``CALL export_peft(id, dir)`` writes it out and ``SELECT … FROM adapters`` finds it. Versions are
new rows (``qa.<scope>.v<n>``); the newest is used.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import pyarrow as pa

from . import _schema, _validate
from .client import quote_literal
from .errors import FailedPreconditionError, InvalidArgumentError

if TYPE_CHECKING:
    from .memory import Memory

__all__ = ["QueryAdapter", "train_query_adapter", "latest_query_adapter", "QUERY_ADAPTER_KIND"]

QUERY_ADAPTER_KIND = "query-lora"
MODULE = "query_embedding"
TENSOR_A = f"base_model.model.{MODULE}.lora_A.weight"
TENSOR_B = f"base_model.model.{MODULE}.lora_B.weight"
#: The embedding model every memory is embedded with (the adapter's base model).
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: The most memories of one scope the softmax runs over (a random sample beyond it; positives always in).
MAX_MEMORIES = 50_000


@dataclass(frozen=True)
class QueryAdapter:
    """A trained query adapter: ``id`` in ``adapters``, its scope and version, and what training measured."""

    id: str
    namespace: str
    version: int
    rank: int
    metrics: dict[str, Any]
    a: np.ndarray
    b: np.ndarray

    def apply(self, vector: np.ndarray) -> np.ndarray:
        """``v + B·(A·v)`` in numpy (what ``apply_lora`` computes on the server)."""
        v = np.asarray(vector, np.float32)
        return v + self.b @ (self.a @ v)

    def sql(self, vector_sql: str) -> str:
        """The SQL expression of the adapted query vector: ``apply_lora(<vector_sql>, X'…', X'…')``."""
        return f"apply_lora({vector_sql}, X'{_hex(self.a)}', X'{_hex(self.b)}')"


def _hex(m: np.ndarray) -> str:
    return np.ascontiguousarray(m, dtype="<f4").tobytes().hex()


def _normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n == 0, 1, n)


def fit(
    queries: np.ndarray,
    memories: np.ndarray,
    positives: list[list[int]],
    *,
    rank: int = 16,
    steps: int = 200,
    lr: float = 0.05,
    tau: float = 0.05,
    weight_decay: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Train ``A`` (rank×d) and ``B`` (d×rank) so that each query's adapted, normalised vector puts its positives
    (indices into ``memories``, unit rows) first under a softmax at temperature ``tau``. Deterministic for a seed."""
    n, d = queries.shape
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 0.01, (rank, d)).astype(np.float32)
    b = np.zeros((d, rank), np.float32)
    moments = [(np.zeros_like(a), np.zeros_like(a)), (np.zeros_like(b), np.zeros_like(b))]
    target = np.zeros((n, memories.shape[0]), np.float32)
    for i, p in enumerate(positives):
        target[i, p] = 1.0 / len(p)
    for t in range(1, steps + 1):
        h = queries @ a.T
        adapted = queries + h @ b.T
        norm = np.linalg.norm(adapted, axis=1, keepdims=True)
        unit = adapted / norm
        logits = unit @ memories.T / tau
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad_logits = (p - target) / (tau * n)
        grad_unit = grad_logits @ memories
        grad_adapted = (grad_unit - unit * np.sum(grad_unit * unit, axis=1, keepdims=True)) / norm
        grads = [(grad_adapted @ b).T @ queries + weight_decay * a, grad_adapted.T @ h + weight_decay * b]
        for param, g, (m, v) in zip((a, b), grads, moments, strict=True):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            param -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return a, b


def _recall_at(queries: np.ndarray, memories: np.ndarray, positives: list[list[int]], k: int) -> float:
    if not positives:
        return float("nan")
    top = np.argsort(-(_normalize(queries) @ memories.T), axis=1)[:, :k]
    return float(np.mean([len(set(p) & set(row)) / len(p) for p, row in zip(positives, top.tolist(), strict=True)]))


def train_query_adapter(
    memory: Memory,
    namespace: str,
    *,
    rank: int = 16,
    steps: int = 200,
    min_queries: int = 4,
    holdout: float = 0.2,
    seed: int = 0,
    jobs: Sequence[str] = (),
) -> QueryAdapter:
    """Train a query adapter for ``namespace`` from its ``memory_feedback`` and store it (module docstring).

    Every question with at least one helpful memory that still exists is an example. With enough examples a
    share ``holdout`` of them is held out: the adapter is trained on the rest, and ``metrics`` reports recall@5
    on the held-out questions before and after (``holdout_r5_before`` / ``holdout_r5_after``), the measure the
    router trusts before it applies the adapter; the stored adapter is then retrained on every example. ``jobs``
    (the ``training_jobs`` it answers) is recorded in ``metrics``. Fewer than
    ``min_queries`` examples raise :class:`FailedPreconditionError` and nothing is written.
    """
    _validate.namespace(namespace)
    _validate.int_in_range(rank, "rank", 1, 256)
    _validate.int_in_range(steps, "steps", 1, 100_000)
    db = memory.db
    if not db.table_exists("memory_feedback"):
        raise FailedPreconditionError(f"no feedback recorded for {namespace!r}: nothing to train a query adapter from")
    started = time.perf_counter()
    feedback = db.sql(
        "SELECT query, memory_id FROM memory_feedback WHERE namespace = $1 AND helpful ORDER BY query, memory_id",
        [namespace],
    ).to_pylist()
    rows = db.sql(
        "SELECT id, embedding FROM memories WHERE namespace = $1 AND embedding IS NOT NULL ORDER BY id", [namespace]
    )
    ids = rows.column(0).to_pylist()
    if not ids:
        raise FailedPreconditionError(f"namespace {namespace!r} has no embedded memories to train a query adapter on")
    flat = rows.column(1).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    matrix = _normalize(flat.astype(np.float32).reshape(len(ids), -1))
    index = {m: i for i, m in enumerate(ids)}
    helpful: dict[str, list[int]] = {}
    for r in feedback:
        if r["memory_id"] in index:
            helpful.setdefault(r["query"], []).append(index[r["memory_id"]])
    questions = sorted(helpful)
    if len(questions) < min_queries:
        raise FailedPreconditionError(
            f"namespace {namespace!r} has {len(questions)} question(s) with helpful memories in its feedback; a query"
            f" adapter needs at least {min_queries} (record feedback with MemoryConditioner.feedback)"
        )
    if len(ids) > MAX_MEMORIES:
        keep = sorted(
            set(np.random.default_rng(seed).choice(len(ids), MAX_MEMORIES, replace=False).tolist())
            | {i for p in helpful.values() for i in p}
        )
        remap = {old: new for new, old in enumerate(keep)}
        matrix = matrix[keep]
        helpful = {q: [remap[i] for i in p] for q, p in helpful.items()}
    values = ", ".join(f"({quote_literal(q)})" for q in questions)
    vectors = db.sql(f"SELECT column1 AS q, embed(column1) AS v FROM (VALUES {values})").to_pylist()
    by_text = {r["q"]: np.asarray(r["v"], np.float32) for r in vectors}
    queries = _normalize(np.stack([by_text[q] for q in questions]))
    positives = [sorted(set(helpful[q])) for q in questions]
    metrics: dict[str, Any] = {
        "scope": namespace,
        "queries": len(questions),
        "memories": int(matrix.shape[0]),
        "jobs": list(jobs),
    }
    n_hold = int(len(questions) * holdout) if len(questions) >= 10 else 0
    if n_hold:
        order = np.random.default_rng(seed).permutation(len(questions))
        held, train = order[:n_hold], order[n_hold:]
        a, b = fit(queries[train], matrix, [positives[i] for i in train], rank=rank, steps=steps, seed=seed)
        held_pos = [positives[i] for i in held]
        metrics["holdout_queries"] = int(n_hold)
        metrics["holdout_r5_before"] = _recall_at(queries[held], matrix, held_pos, 5)
        metrics["holdout_r5_after"] = _recall_at(queries[held] + queries[held] @ a.T @ b.T, matrix, held_pos, 5)
    a, b = fit(queries, matrix, positives, rank=rank, steps=steps, seed=seed)
    metrics["train_r5_before"] = _recall_at(queries, matrix, positives, 5)
    metrics["train_r5_after"] = _recall_at(queries + queries @ a.T @ b.T, matrix, positives, 5)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    digest = hashlib.sha256(
        json.dumps([[q, sorted(ids[i] for i in p)] for q, p in zip(questions, positives, strict=True)]).encode()
    ).hexdigest()[:16]
    metrics["training_data_hash"] = digest
    return _store(memory, namespace, a, b, metrics)


def _store(memory: Memory, namespace: str, a: np.ndarray, b: np.ndarray, metrics: dict[str, Any]) -> QueryAdapter:
    db = memory.db
    _schema.ensure_tables(db, *_schema.WEIGHTS)
    previous = latest_query_adapter(memory, namespace)
    version = 1 if previous is None else previous.version + 1
    adapter_id = f"qa.{namespace}.v{version}"
    rank = int(a.shape[0])
    metrics = {**metrics, "version": version, "rank": rank}
    config = {
        "peft_type": "LORA",
        "task_type": "FEATURE_EXTRACTION",
        "base_model_name_or_path": BASE_MODEL,
        "r": rank,
        "lora_alpha": rank,
        "target_modules": [MODULE],
        "use_rslora": False,
        "fan_in_fan_out": False,
        "bias": "none",
    }
    tensors = {TENSOR_A: a, TENSOR_B: b}
    db.ingest(
        "tensors",
        pa.table(
            {
                "model": [adapter_id] * 2,
                "name": list(tensors),
                "dtype": ["F32"] * 2,
                "shape": pa.array([list(t.shape) for t in tensors.values()], pa.list_(pa.int64())),
                "chunk": pa.array([0, 0], pa.int32()),
                "n_chunks": pa.array([1, 1], pa.int32()),
                "data": pa.array([np.ascontiguousarray(t, "<f4").tobytes() for t in tensors.values()], pa.binary()),
            }
        ),
    )
    nbytes = sum(t.size * 4 for t in tensors.values())
    db.execute(
        "INSERT INTO models VALUES ($1, 'peft-lora', NULL, 2, $2, now())",
        [adapter_id, nbytes],
    )
    db.execute(
        "INSERT INTO adapters (id, kind, base_model, rank, alpha, use_rslora, target_modules, description, metrics,"
        f" config) VALUES ($1, {quote_literal(QUERY_ADAPTER_KIND)}, $2, $3, $4, false, make_array($5), $6, $7, $8)",
        [
            adapter_id,
            BASE_MODEL,
            rank,
            float(rank),
            MODULE,
            f"query adapter for retrieval in {namespace} (version {version}, {metrics['queries']} questions)",
            json.dumps(metrics, sort_keys=True),
            json.dumps(config, sort_keys=True),
        ],
    )
    return QueryAdapter(adapter_id, namespace, version, rank, metrics, a, b)


def latest_query_adapter(memory: Memory, namespace: str) -> Optional[QueryAdapter]:
    """The newest query adapter of ``namespace`` with its matrices, or None."""
    rows = memory.db.sql(
        "SELECT id, metrics FROM adapters WHERE kind = $1 AND json_get_str(metrics, 'scope') = $2",
        [QUERY_ADAPTER_KIND, namespace],
    ).to_pylist()
    if not rows:
        return None
    best = max(rows, key=lambda r: int(json.loads(r["metrics"]).get("version", 0)))
    metrics = json.loads(best["metrics"])
    data = memory.db.sql(
        "SELECT name, shape, data FROM tensors WHERE model = $1 ORDER BY name, chunk", [best["id"]]
    ).to_pylist()
    mats = {r["name"]: np.frombuffer(r["data"], "<f4").reshape(r["shape"]).copy() for r in data}
    if TENSOR_A not in mats or TENSOR_B not in mats:
        raise InvalidArgumentError(f"adapter {best['id']!r} has no {TENSOR_A} / {TENSOR_B} tensors")
    a, b = mats[TENSOR_A], mats[TENSOR_B]
    return QueryAdapter(best["id"], namespace, int(metrics.get("version", 0)), a.shape[0], metrics, a, b)
