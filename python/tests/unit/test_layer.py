"""The evolution layer's building blocks with a recording stand-in for the client: table creation, input checks,
per-namespace parameter rows, result types and routing types. No server needed."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pytest

import marrow
from marrow import _params, _schema, _validate
from marrow.records import Hit, MemoryRecord


class RecordingClient:
    """Answers `sql` with canned rows and records every statement."""

    def __init__(self, rows: Optional[list[dict[str, Any]]] = None) -> None:
        self.rows = rows or []
        self.statements: list[tuple[str, list[Any]]] = []

    def sql(self, query: str, params: Optional[Sequence[Any]] = None) -> pa.Table:
        self.statements.append((query, list(params or [])))
        return pa.Table.from_pylist(self.rows)

    def execute(self, query: str, params: Optional[Sequence[Any]] = None) -> int:
        self.statements.append((query, list(params or [])))
        return 0


def test_ensure_tables_creates_each_named_table_once_and_in_order():
    db = RecordingClient()
    marrow.ensure_tables(db, *_schema.ROUTER)
    created = [re.match(r"CREATE TABLE IF NOT EXISTS (\w+) \(", q).group(1) for q, _ in db.statements]
    assert created == list(_schema.ROUTER)
    db = RecordingClient()
    marrow.ensure_tables(db)
    assert len(db.statements) == len(_schema.DDL) == len(
        _schema.MEMORY + _schema.CONDITIONER + _schema.ROUTER + _schema.WEIGHTS
    )
    db = RecordingClient()
    with pytest.raises(marrow.InvalidArgumentError):
        marrow.ensure_tables(db, "memory_events", "memories")
    assert db.statements == []  # nothing is created when one name is wrong
    for name, ddl in _schema.DDL.items():
        assert ddl.startswith(f"CREATE TABLE IF NOT EXISTS {name} (")


def test_validation():
    assert _validate.text("x", "query") == "x"
    for bad in ("", "   ", None, 3):
        with pytest.raises(marrow.InvalidArgumentError, match="query must be a non-empty string"):
            _validate.text(bad, "query")
    assert _validate.importance(1) == 1.0
    with pytest.raises(marrow.InvalidArgumentError):
        _validate.importance(1.5)
    assert _validate.metadata(None) == "{}" and _validate.metadata({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
    for bad_meta in ([1], {"x": object()}):
        with pytest.raises(marrow.InvalidArgumentError):
            _validate.metadata(bad_meta)
    assert _validate.embedding(None, 3) is None
    vec = _validate.embedding([1, 2, 3], 3)
    assert vec is not None and vec.dtype == np.float32
    for bad_vec in ([1.0, 2.0], [[1.0, 2.0, 3.0]], [1.0, float("nan"), 0.0], ["a", "b", "c"]):
        with pytest.raises(marrow.InvalidArgumentError):
            _validate.embedding(bad_vec, 3)
    assert _validate.int_in_range(5, "k", 1, 10) == 5
    for bad_k in (0, 11, 2.0, "3"):
        with pytest.raises(marrow.InvalidArgumentError, match=r"k must be an integer in \[1, 10\]"):
            _validate.int_in_range(bad_k, "k", 1, 10)


def test_parameter_rows_prefer_the_namespace_then_star_then_defaults():
    columns = [f.name for f in dataclasses.fields(marrow.Weights) if f.name != "source"]
    star = {"namespace": "*", **dataclasses.asdict(marrow.Weights(w_relevance=0.9, pool=7)), "updates": None}
    del star["source"]
    own = {**star, "namespace": "alice", "w_recency": 0.4, "updates": 3}
    assert _params.load(RecordingClient([star, own]), "t", "alice", marrow.Weights()) == marrow.Weights(
        w_relevance=0.9, w_recency=0.4, pool=7, updates=3, source="alice"
    )
    from_star = _params.load(RecordingClient([star]), "t", "bob", marrow.Weights())
    assert from_star.source == "*" and from_star.pool == 7 and from_star.updates == 0
    defaults = marrow.Thresholds(l0_max_uncertainty=0.1)
    assert _params.load(RecordingClient(), "t", "bob", defaults) is defaults

    db = RecordingClient()
    _params.store(db, "conditioner_weights", "alice", marrow.Weights(pool=9))
    [(sql, params)] = db.statements
    assert sql.startswith(f"INSERT INTO conditioner_weights (namespace, {', '.join(columns)}) VALUES ($1, $2,")
    assert sql.endswith("updates = excluded.updates, updated_at = now()")
    assert params[0] == "alice" and params[columns.index("pool") + 1] == 9
    assert [type(p) for p in params[1:]] == [int if c in ("pool", "updates") else float for c in columns]
    with pytest.raises(marrow.InvalidArgumentError):
        _params.store(db, "conditioner_weights", " ", marrow.Weights())


def test_one_hit_type_for_recall_and_conditioned_retrieval():
    record = MemoryRecord(
        id="m1",
        namespace="alice",
        kind="note",
        content="likes tea",
        importance=0.7,
        created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        updated_at=None,
        last_accessed_at=None,
        access_count=0,
        metadata={},
    )
    hit = Hit(record, 0.25)
    assert (hit.id, hit.content, hit.importance) == ("m1", "likes tea", 0.7)
    assert hit.similarity == 0.75 and hit.relevance == 0.75 and hit.score is None
    assert Hit(record, 1.5).relevance == 0.0  # opposite vectors: similarity below 0, relevance floored
    assert marrow.ScoredMemory is Hit and marrow.memory.Hit is Hit


def test_decisions_take_keywords_and_levels_compare_as_numbers():
    assert [int(level) for level in marrow.Level] == [0, 1, 2, 3, 4]
    assert marrow.Level.APPLY_ADAPTER == 2 and f"L{marrow.Level.REQUEST_ADAPTER}" == "L3"
    fields = {f.name for f in dataclasses.fields(marrow.Decision)}
    assert {"id", "level", "action", "uncertainty", "context", "maintenance"} <= fields
    with pytest.raises(TypeError):
        marrow.Decision("id", "ns", "q", 0, "answer_from_memory")
