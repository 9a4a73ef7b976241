"""Per-namespace parameter rows: the conditioner's weights and the router's thresholds are stored the same way.

A parameter set is a frozen dataclass whose fields are the table's columns, plus ``source`` (the row it came from:
a namespace, ``'*'`` for the default row, or ``defaults``). It is read on every use, so a change made by SQL or by
another process applies at once.
"""

from __future__ import annotations

import time
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from . import _validate
from .client import Client

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["load", "store", "Recent"]

P = TypeVar("P", bound="DataclassInstance")
V = TypeVar("V")


def _columns(params: DataclassInstance) -> list[tuple[str, bool]]:
    """(column, is an integer column) for each field but ``source``."""
    return [(f.name, f.type in ("int", int)) for f in fields(params) if f.name != "source"]


def load(db: Client, table: str, namespace: str, defaults: P) -> P:
    """The namespace's row of ``table``, else its ``'*'`` row, else ``defaults``."""
    columns = _columns(defaults)
    rows = db.sql(
        f"SELECT namespace, {', '.join(c for c, _ in columns)} FROM {table} WHERE namespace IN ($1, '*')",
        [namespace],
    ).to_pylist()
    rows.sort(key=lambda r: r["namespace"] == "*")
    if not rows:
        return defaults
    row = rows[0]
    values: dict[str, Any] = {c: int(row[c] or 0) if is_int else row[c] for c, is_int in columns}
    return replace(defaults, **values, source=row["namespace"])


def store(db: Client, table: str, namespace: str, params: DataclassInstance) -> None:
    """Insert or replace the namespace's row of ``table`` (``'*'``: the default row)."""
    _validate.namespace(namespace)
    columns = _columns(params)
    names = [c for c, _ in columns]
    marks = ", ".join(f"${i + 2}" for i in range(len(names)))
    updates = ", ".join(f"{c} = excluded.{c}" for c in names)
    db.execute(
        f"INSERT INTO {table} (namespace, {', '.join(names)}) VALUES ($1, {marks}) ON CONFLICT (namespace) DO UPDATE"
        f" SET {updates}, updated_at = now()",
        [namespace, *(int(getattr(params, c)) if is_int else float(getattr(params, c)) for c, is_int in columns)],
    )


class Recent(Generic[V]):
    """Values by namespace, reused while younger than a given age: the conditioner's weights, the router's thresholds
    and query adapters, read once per ``max_age`` seconds instead of once per call."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, V]] = {}

    def get(self, namespace: str, max_age: float, load: Callable[[], V]) -> V:
        """The value read less than ``max_age`` seconds ago, else ``load()`` (always with ``max_age`` 0)."""
        cached = self._values.get(namespace)
        now = time.monotonic()
        if cached is not None and max_age and now - cached[0] < max_age:
            return cached[1]
        value = load()
        self._values[namespace] = (now, value)
        return value

    def forget(self, namespace: str | None = None) -> None:
        """Drop one namespace's value, or all of them."""
        if namespace is None:
            self._values.clear()
        else:
            self._values.pop(namespace, None)
