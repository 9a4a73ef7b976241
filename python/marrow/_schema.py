"""The tables the Python layer creates, and the one function that creates them.

``memories`` is the server's built-in table; every other table the package reads or writes is defined here, so a
new table or column is added in one place. :func:`ensure_tables` runs ``CREATE TABLE IF NOT EXISTS``, so calling it
again (every ``Memory``, ``MemoryConditioner`` and ``EvolutionRouter`` does, for its own tables) changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import pyarrow as pa

from .errors import InvalidArgumentError, NotFoundError

if TYPE_CHECKING:
    from .client import Client

__all__ = ["DDL", "MEMORY", "CONDITIONER", "ROUTER", "ensure_tables", "vector_dimension", "embed_dimension"]

DDL: dict[str, str] = {
    # One row per change of a memory; Memory.history() reads it (Lance versions get cleaned up, so they are not
    # the history).
    "memory_events": """CREATE TABLE IF NOT EXISTS memory_events (
    id TEXT PRIMARY KEY DEFAULT uuid(),
    memory_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    operation TEXT NOT NULL,
    old_content TEXT,
    new_content TEXT,
    related_id TEXT,
    actor TEXT,
    at TIMESTAMP DEFAULT now(),
    details TEXT DEFAULT '{}')""",
    # Append-only: one row per recalled memory; Memory.maintain() claims rows by fold_batch and folds them.
    "memory_access_log": """CREATE TABLE IF NOT EXISTS memory_access_log (
    id TEXT PRIMARY KEY DEFAULT uuid(),
    memory_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    query TEXT,
    rank INT,
    distance DOUBLE,
    at TIMESTAMP DEFAULT now(),
    fold_batch TEXT)""",
    # The conditioner's weights per namespace ('*': the default row).
    "conditioner_weights": """CREATE TABLE IF NOT EXISTS conditioner_weights (
    namespace TEXT PRIMARY KEY,
    w_relevance DOUBLE NOT NULL,
    w_recency DOUBLE NOT NULL,
    w_importance DOUBLE NOT NULL,
    half_life_hours DOUBLE NOT NULL,
    pool INT NOT NULL,
    learning_rate DOUBLE NOT NULL,
    updates BIGINT DEFAULT 0,
    updated_at TIMESTAMP DEFAULT now())""",
    # Whether a retrieved memory helped, with its features at feedback time; `applied` once learned from.
    "memory_feedback": """CREATE TABLE IF NOT EXISTS memory_feedback (
    id TEXT PRIMARY KEY DEFAULT uuid(),
    namespace TEXT NOT NULL,
    memory_id TEXT NOT NULL,
    query TEXT,
    helpful BOOLEAN NOT NULL,
    relevance DOUBLE,
    recency DOUBLE,
    importance DOUBLE,
    applied BOOLEAN DEFAULT false,
    at TIMESTAMP DEFAULT now())""",
    # The router's thresholds per namespace ('*': the default row).
    "router_thresholds": """CREATE TABLE IF NOT EXISTS router_thresholds (
    namespace TEXT PRIMARY KEY,
    l0_max_uncertainty DOUBLE NOT NULL,
    l1_max_uncertainty DOUBLE NOT NULL,
    l2_max_adapter_distance DOUBLE NOT NULL,
    target_failure_rate DOUBLE NOT NULL,
    learning_rate DOUBLE NOT NULL,
    maintenance_every BIGINT NOT NULL,
    updates BIGINT DEFAULT 0,
    updated_at TIMESTAMP DEFAULT now())""",
    "router_decisions": """CREATE TABLE IF NOT EXISTS router_decisions (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    query TEXT,
    level INT NOT NULL,
    action TEXT NOT NULL,
    uncertainty DOUBLE,
    top_similarity DOUBLE,
    adapter TEXT,
    adapter_distance DOUBLE,
    job_id TEXT,
    memory_ids TEXT,
    thresholds TEXT,
    details TEXT,
    at TIMESTAMP DEFAULT now())""",
    "router_outcomes": """CREATE TABLE IF NOT EXISTS router_outcomes (
    id TEXT PRIMARY KEY DEFAULT uuid(),
    decision_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    level INT NOT NULL,
    success BOOLEAN NOT NULL,
    note TEXT,
    applied BOOLEAN DEFAULT false,
    at TIMESTAMP DEFAULT now())""",
    # L3 requests: the task and the SQL that selects its training examples, for a trainer to pick up.
    "training_jobs": """CREATE TABLE IF NOT EXISTS training_jobs (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    task TEXT NOT NULL,
    examples_sql TEXT NOT NULL,
    base_model TEXT,
    status TEXT DEFAULT 'requested',
    decision_id TEXT,
    requested_at TIMESTAMP DEFAULT now())""",
    # The engine's weight tables (catalog::builtin::TENSORS_DDL / MODELS_DDL, created by the first weight import):
    # the same statements, for query adapters stored before any import.
    "tensors": """CREATE TABLE IF NOT EXISTS tensors (model TEXT NOT NULL, name TEXT NOT NULL, dtype TEXT NOT NULL,
    shape BIGINT[] NOT NULL, quantization TEXT, chunk INT NOT NULL, n_chunks INT NOT NULL, data BYTEA NOT NULL,
    PRIMARY KEY (model, name, chunk))""",
    "models": """CREATE TABLE IF NOT EXISTS models (model TEXT PRIMARY KEY, format TEXT NOT NULL, metadata TEXT,
    tensors BIGINT NOT NULL, bytes BIGINT NOT NULL, imported_at TIMESTAMP NOT NULL)""",
}

# The tables each part of the layer needs, in creation order.
MEMORY = ("memory_events", "memory_access_log")
CONDITIONER = ("conditioner_weights", "memory_feedback")
ROUTER = ("router_thresholds", "router_decisions", "router_outcomes", "training_jobs")
WEIGHTS = ("tensors", "models")


def ensure_tables(client: Client, *names: str) -> None:
    """Create the named tables if they are missing (all of the layer's tables when no name is given)."""
    unknown = [n for n in names if n not in DDL]
    if unknown:
        raise InvalidArgumentError(f"not a table of the Python layer: {unknown}; they are {sorted(DDL)}")
    for name in names or tuple(DDL):
        client.execute(DDL[name])


def vector_dimension(client: Client, table: str, column: str = "embedding") -> Optional[int]:
    """n of ``table.column``, a ``FLOAT[n]`` column; None when the table does not exist. ``table`` is SQL (quoted
    by the caller where needed)."""
    try:
        schema = client.sql(f"SELECT {column} FROM {table} LIMIT 0").schema
    except NotFoundError:
        return None
    typ = schema.field(column).type
    if not pa.types.is_fixed_size_list(typ):
        raise InvalidArgumentError(f"{table}.{column} is {typ}, expected FLOAT[n]")
    return int(typ.list_size)


def embed_dimension(client: Client) -> int:
    """The length of the vectors the server's ``embed()`` makes."""
    return len(client.scalar("SELECT embed('dimension')"))
