"""The filter compiler alone: the SQL it emits binds every value as a parameter, and bad filters are refused."""

from __future__ import annotations

import pytest

from marrow import InvalidArgumentError
from marrow._filters import compile_filters


def compile_(filters):
    params: list = []
    return compile_filters(filters, params), params


def test_values_are_parameters_and_keys_are_quoted_literals():
    sql, params = compile_({"user": "x'); DROP TABLE memories; --", "turn": {"gte": 3}})
    assert params == ["x'); DROP TABLE memories; --", 3]
    assert sql == (
        "(json_get_str(metadata, 'user') = $1) AND (TRY_CAST(json_as_text(metadata, 'turn') AS DOUBLE) >= $2)"
    )
    sql, _ = compile_({"it's": 1})
    assert "'it''s'" in sql


def test_types_pick_the_json_getter_and_columns_stay_columns():
    assert compile_({"vip": True})[0] == "(json_get_bool(metadata, 'vip') = $1)"
    assert compile_({"metadata.a.b": "c"})[0] == "(json_get_str(metadata, 'a', 'b') = $1)"
    assert compile_({"kind": ["a", "b"]}) == ("(kind IN ($1, $2))", ["a", "b"])
    assert compile_({"importance": {"gt": 0.5}}) == ("(importance > $1)", [0.5])


def test_logic_nests_and_not_is_definite():
    sql, params = compile_({"OR": [{"kind": "a"}, {"NOT": {"user": "b"}}]})
    assert sql == "(((kind = $1)) OR ((NOT coalesce(((json_get_str(metadata, 'user') = $2)), false))))"
    assert params == ["a", "b"]


@pytest.mark.parametrize(
    "filters",
    [{"kind": {"regex": "x"}}, {"AND": {}}, {"kind": {"in": "ab"}}, {"importance": True}, {"x": [1, "a"]}, {3: 1}],
)
def test_bad_filters(filters):
    with pytest.raises(InvalidArgumentError):
        compile_(filters)


def test_depth_is_bounded():
    f: dict = {"kind": "a"}
    for _ in range(40):
        f = {"NOT": f}
    with pytest.raises(InvalidArgumentError, match="deeper"):
        compile_(f)
