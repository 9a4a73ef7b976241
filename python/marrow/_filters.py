"""mem0's filter language, compiled to one SQL condition with bound parameters.

A filter is a mapping. Each key is

- a column of ``memories``: ``id``, ``kind``, ``content``, ``importance``, ``access_count``, ``created_at``,
  ``updated_at``, ``last_accessed_at``, ``expires_at``;
- a ``metadata`` key: any other name, or ``metadata.<path>`` for a nested one (``metadata.address.city``);
- ``AND`` / ``OR`` with a list of filters, ``NOT`` with a filter or a list of filters (negating their AND);
- one of the older range shorthands: ``min_importance``, ``max_importance``, ``created_after``, ``created_before``.

A value is either a plain value (equality; a list means ``in``) or a mapping of operators to values:
``eq, ne, gt, gte, lt, lte, in, nin, contains, icontains``. Several keys in one mapping are ANDed.

Metadata values are read with the JSON getter of the value's type (``json_get_str`` for text, the value's text cast
to DOUBLE for numbers, ``json_get_bool`` for booleans), so ``{"turn": {"gte": 3}}`` compares numbers, not text. A
key that a memory's metadata lacks (or holds with another type) matches nothing, except under ``ne``/``nin`` and
``NOT``, which it satisfies: a memory without a ``category`` is "not food". ``contains`` tests a substring of a text
value or an element of an array value. The whole condition is one WHERE clause, so it is a prefilter of the vector
and the full-text search (EXPLAIN shows it inside the search, not after the top k).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping

from .client import quote_literal
from .errors import InvalidArgumentError

__all__ = ["compile_filters", "OPERATORS", "COLUMNS"]

#: Columns of ``memories`` a filter may name, with the kind of value they hold.
COLUMNS = {
    "id": "text",
    "namespace": "text",
    "kind": "text",
    "content": "text",
    "importance": "number",
    "access_count": "number",
    "created_at": "time",
    "updated_at": "time",
    "last_accessed_at": "time",
    "expires_at": "time",
}
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "icontains")
_COMPARE = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_SHORTHANDS = {
    "min_importance": ("importance", "gte"),
    "max_importance": ("importance", "lte"),
    "created_after": ("created_at", "gte"),
    "created_before": ("created_at", "lt"),
}
_MAX_DEPTH = 32


def compile_filters(filters: Mapping[str, Any], params: list[Any], columns: Mapping[str, str] = COLUMNS) -> str:
    """The SQL condition for ``filters``; values are appended to ``params`` and referenced as ``$n``. ``columns``
    (name to ``text``, ``number`` or ``time``) are the table's own columns; any other key is a metadata key."""
    if not isinstance(filters, Mapping):
        raise InvalidArgumentError(f"filters must be a mapping, got {type(filters).__name__}")
    return _Compiler(params, columns).mapping(filters, 0) or "true"


class _Compiler:
    def __init__(self, params: list[Any], columns: Mapping[str, str]) -> None:
        self.params = params
        self.columns = columns

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def mapping(self, filters: Mapping[str, Any], depth: int) -> str:
        if depth > _MAX_DEPTH:
            raise InvalidArgumentError(f"filters nest deeper than {_MAX_DEPTH} levels")
        clauses = [self.key(key, value, depth) for key, value in filters.items()]
        return " AND ".join(f"({c})" for c in clauses)

    def key(self, key: Any, value: Any, depth: int) -> str:
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(f"a filter key must be a non-empty string, got {key!r}")
        if key in ("AND", "OR"):
            parts = self.list_of_filters(key, value, depth)
            return f" {key} ".join(f"({p})" for p in parts)
        if key == "NOT":
            parts = self.list_of_filters(key, value if isinstance(value, list) else [value], depth)
            # A condition over a missing key is NULL; NOT of it must still be a definite true.
            return "NOT coalesce(" + " AND ".join(f"({p})" for p in parts) + ", false)"
        if key in _SHORTHANDS:
            column, op = _SHORTHANDS[key]
            return self.condition(column, {op: value})
        return self.condition(key, value)

    def list_of_filters(self, key: str, value: Any, depth: int) -> list[str]:
        if not isinstance(value, list) or not value:
            raise InvalidArgumentError(f"{key} takes a non-empty list of filters, got {value!r}")
        parts = []
        for item in value:
            if not isinstance(item, Mapping) or not item:
                raise InvalidArgumentError(f"{key} takes a list of non-empty filter mappings, got {item!r}")
            parts.append(self.mapping(item, depth + 1))
        return parts

    def condition(self, key: str, value: Any) -> str:
        if isinstance(value, Mapping):
            if not value:
                raise InvalidArgumentError(f"filter on {key!r} has no operator; use one of {list(OPERATORS)}")
            return " AND ".join(self.operator(key, op, v) for op, v in value.items())
        if isinstance(value, (list, tuple, set)):
            return self.operator(key, "in", list(value))
        return self.operator(key, "eq", value)

    def operator(self, key: str, op: Any, value: Any) -> str:
        if op not in OPERATORS:
            raise InvalidArgumentError(f"unknown filter operator {op!r} on {key!r}; operators are {list(OPERATORS)}")
        if op in ("in", "nin"):
            if not isinstance(value, (list, tuple, set)) or not value:
                raise InvalidArgumentError(f"{op} on {key!r} takes a non-empty list, got {value!r}")
            values = list(value)
        else:
            if isinstance(value, (list, tuple, set, Mapping)) or value is None:
                raise InvalidArgumentError(f"{op} on {key!r} takes one text, number, boolean or time, got {value!r}")
            values = [value]
        kind = _kind(values, key, op)
        column = self.column(key, kind)
        metadata = key not in self.columns
        if op in ("contains", "icontains"):
            if kind != "text":
                raise InvalidArgumentError(f"{op} on {key!r} takes text, got {value!r}")
            return self.contains(key, column, values[0], op == "icontains", metadata)
        if op in ("in", "nin"):
            marks = ", ".join(self.bind(v) for v in values)
            if op == "in":
                return f"{column} IN ({marks})"
            return f"coalesce({column} NOT IN ({marks}), true)" if metadata else f"{column} NOT IN ({marks})"
        sql = f"{column} {_COMPARE[op]} {self.bind(values[0])}"
        return f"coalesce({sql}, true)" if op == "ne" and metadata else sql

    def column(self, key: str, kind: str) -> str:
        if key in self.columns:
            expected = self.columns[key]
            if expected != kind and not (expected == "time" and kind == "text"):
                raise InvalidArgumentError(f"column {key!r} holds {expected} values; the filter gives {kind}")
            return key
        path = _path(key)
        if not all(path):
            raise InvalidArgumentError(f"empty segment in the metadata path {key!r}")
        args = ", ".join(quote_literal(p) for p in path)
        if kind == "number":
            # json_get_float of datafusion-functions-json 0.54 reads negative numbers as NULL; the value's text cast
            # to DOUBLE reads every number (and numeric text, as json_get_float would).
            return f"TRY_CAST(json_as_text(metadata, {args}) AS DOUBLE)"
        getter = {"text": "json_get_str", "bool": "json_get_bool"}.get(kind)
        if getter is None:
            raise InvalidArgumentError(f"metadata key {key!r} cannot be compared with a {kind} value")
        return f"{getter}(metadata, {args})"

    def contains(self, key: str, column: str, value: str, fold: bool, metadata: bool) -> str:
        if not metadata:
            if fold:
                return f"strpos(lower({column}), lower({self.bind(value)})) > 0"
            return f"strpos({column}, {self.bind(value)}) > 0"
        path = ", ".join(quote_literal(p) for p in _path(key))
        if fold:
            # The value's text: a string as it is, an array or object as its JSON.
            return f"coalesce(strpos(lower(json_as_text(metadata, {path})), lower({self.bind(value)})) > 0, false)"
        # A substring of a text value, or an element of an array (json_get_array yields elements as JSON text).
        text = f"strpos({column}, {self.bind(value)}) > 0"
        element = f"array_has(json_get_array(metadata, {path}), {self.bind(json.dumps(value))})"
        return f"coalesce({text}, false) OR coalesce({element}, false)"


def _path(key: str) -> list[str]:
    """A metadata key's path inside the JSON: ``metadata.a.b`` is a nested key, any other name one key."""
    return key[len("metadata.") :].split(".") if key.startswith("metadata.") else [key]


def _kind(values: list[Any], key: str, op: str) -> str:
    kinds = {_value_kind(v, key) for v in values}
    if len(kinds) > 1:
        raise InvalidArgumentError(f"{op} on {key!r} mixes value types: {values!r}")
    return kinds.pop()


def _value_kind(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, datetime):
        return "time"
    raise InvalidArgumentError(
        f"filter value for {key!r} must be text, a number, a boolean or a datetime, got {value!r}"
    )
