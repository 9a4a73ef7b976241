"""The MCP server (`marrow.mcp`) driven by the `mcp` SDK's own client, over stdio and streamable HTTP, against the
real `marrow` binary: every tool called, its results checked, bad calls answered with tool errors, nothing written
by a call that fails, and the MCP server still answering after the Marrow server went away and came back."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

import marrow
from marrow.mcp import read_only_refusal

TOOLS = {"remember", "recall", "get", "update", "forget", "history", "sql"}


def _stdio(uri: str, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "marrow.mcp", "--uri", uri, *extra],
        env={k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "PATH", "MARROW"))},
    )


@asynccontextmanager
async def _client(uri: str, *extra: str) -> AsyncIterator[Client]:
    async with Client(_stdio(uri, *extra)) as client:
        yield client


def _data(result: Any) -> Any:
    """A tool result's JSON value (the structured content, unwrapped from the SDK's {"result": …} for lists)."""
    assert not result.is_error, result.content
    data = result.structured_content
    if isinstance(data, dict) and set(data) == {"result"}:
        return data["result"]
    return data


def _error(result: Any) -> str:
    assert result.is_error, result
    return " ".join(getattr(c, "text", "") for c in result.content)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_tools_are_listed_with_descriptions_and_schemas(server) -> None:
    async def go() -> None:
        async with _client(server.uri) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert TOOLS <= set(tools)
            for name in TOOLS:
                assert tools[name].description and len(tools[name].description) > 30, name
                assert tools[name].input_schema["type"] == "object"
            recall = tools["recall"].input_schema
            assert recall["required"] == ["query"]
            assert {"query", "namespace", "k", "mode", "filters"} <= set(recall["properties"])
            assert "Read-only" in tools["sql"].description

    run(go())


def test_every_tool_over_stdio(server) -> None:
    async def go() -> None:
        async with _client(server.uri) as c:
            first = _data(
                await c.call_tool(
                    "remember",
                    {
                        "content": "Ada prefers tea over coffee",
                        "namespace": "ada",
                        "kind": "preference",
                        "importance": 0.8,
                        "metadata": {"source": "chat", "turn": 3},
                    },
                )
            )
            _data(await c.call_tool("remember", {"content": "Ada moved to Lyon in 2021", "namespace": "ada"}))
            _data(await c.call_tool("remember", {"content": "Bob likes rainy days", "namespace": "bob"}))
            mid = first["id"]

            hits = _data(await c.call_tool("recall", {"query": "what does Ada drink?", "namespace": "ada", "k": 2}))
            assert hits[0]["id"] == mid
            assert {h["namespace"] for h in hits} == {"ada"}
            assert hits[0]["metadata"] == {"source": "chat", "turn": 3} and hits[0]["distance"] >= 0

            for mode in ("vector", "keyword"):
                hits = _data(await c.call_tool("recall", {"query": "Lyon", "namespace": "ada", "mode": mode, "k": 1}))
                assert "Lyon" in hits[0]["content"], mode
            hits = _data(
                await c.call_tool(
                    "recall", {"query": "Ada", "namespace": "ada", "filters": {"kind": "preference"}, "k": 5}
                )
            )
            assert [h["id"] for h in hits] == [mid]

            got = _data(await c.call_tool("get", {"memory_id": mid}))
            assert got["content"] == "Ada prefers tea over coffee" and got["kind"] == "preference"

            updated = _data(
                await c.call_tool(
                    "update", {"memory_id": mid, "content": "Ada prefers green tea", "metadata": {"turn": 9}}
                )
            )
            assert updated["content"] == "Ada prefers green tea"
            assert updated["metadata"] == {"source": "chat", "turn": 9}

            events = _data(await c.call_tool("history", {"memory_id": mid}))
            assert [e["operation"] for e in events] == ["add", "update"]
            assert events[1]["old_content"] == "Ada prefers tea over coffee"

            rows = _data(
                await c.call_tool(
                    "sql", {"query": "SELECT namespace, count(*) AS n FROM memories GROUP BY 1 ORDER BY 1"}
                )
            )
            assert rows["rows"] == [{"namespace": "ada", "n": 2}, {"namespace": "bob", "n": 1}]
            assert rows["truncated"] is False

            report = _data(await c.call_tool("forget", {"memory_id": mid}))
            assert report["memory_id"] == mid
            assert "no memory" in _error(await c.call_tool("get", {"memory_id": mid}))
            assert [e["operation"] for e in _data(await c.call_tool("history", {"memory_id": mid}))][-1] == "delete"

            recent = await c.read_resource("marrow://namespaces/ada/recent")
            listed = json.loads(recent.contents[0].text)
            assert [m["content"] for m in listed] == ["Ada moved to Lyon in 2021"]

    run(go())


def test_bad_calls_are_tool_errors_and_write_nothing(server) -> None:
    async def go() -> None:
        async with _client(server.uri) as c:
            _data(await c.call_tool("remember", {"content": "kept", "namespace": "ns"}))
            # Wrong argument types are refused by the schema.
            assert _error(await c.call_tool("remember", {"content": ["not", "text"]}))
            assert _error(await c.call_tool("recall", {"query": "x", "namespace": "ns", "k": "five"}))
            # Marrow's own checks come back with its message.
            assert "importance" in _error(
                await c.call_tool("remember", {"content": "x", "namespace": "ns", "importance": 7})
            )
            assert "unknown namespace 'nope'" in _error(
                await c.call_tool("recall", {"query": "kept", "namespace": "nope"})
            )
            assert "mode" in _error(
                await c.call_tool("recall", {"query": "kept", "namespace": "ns", "mode": "psychic"})
            )
            assert "operator" in _error(
                await c.call_tool("recall", {"query": "kept", "namespace": "ns", "filters": {"turn": {"approx": 3}}})
            )
            assert "no memory" in _error(await c.call_tool("get", {"memory_id": "missing"}))
            assert "no memory" in _error(await c.call_tool("update", {"memory_id": "missing", "content": "y"}))
            # The read-only sql tool refuses writes, however they are dressed up.
            for sql, why in (
                ("DELETE FROM memories", "read-only"),
                ("EXPLAIN ANALYZE INSERT INTO memories (id) VALUES ('x')", "read-only"),
                ("SELECT 1; DROP TABLE memories", "one statement"),
                ("SELECT * INTO stolen FROM memories", "read-only"),
                ("WITH t AS (SELECT 1) UPDATE memories SET content = 'x'", "read-only"),
            ):
                assert why in _error(await c.call_tool("sql", {"query": sql})), sql
            assert "no_such_table" in _error(await c.call_tool("sql", {"query": "SELECT * FROM no_such_table"}))
            for line in _error(await c.call_tool("sql", {"query": "SELEC 1"})).splitlines():
                assert not line.lstrip().startswith("File "), "a stack trace leaked"
            rows = _data(await c.call_tool("sql", {"query": "SELECT content FROM memories"}))["rows"]
            assert rows == [{"content": "kept"}]

    run(go())


def test_writes_through_sql_only_when_allowed(server) -> None:
    async def go() -> None:
        async with _client(server.uri, "--allow-sql-writes") as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert "Read-only" not in tools["sql"].description
            _data(await c.call_tool("sql", {"query": "CREATE TABLE notes (id INT, body VARCHAR)"}))
            _data(await c.call_tool("sql", {"query": "INSERT INTO notes VALUES (1, 'a')"}))
            assert _data(await c.call_tool("sql", {"query": "SELECT count(*) AS n FROM notes"}))["rows"] == [{"n": 1}]

    run(go())


def test_read_only_check() -> None:
    assert read_only_refusal("SELECT 'DROP TABLE x; DELETE' AS s -- INSERT") is None
    assert read_only_refusal('SELECT "update" FROM t') is None
    assert read_only_refusal("  with q as (select 1) select * from q;  ") is None
    assert read_only_refusal("EXPLAIN SELECT 1") is None
    assert read_only_refusal("") is not None
    assert read_only_refusal("SET marrow.nprobes = 1") is not None
    assert read_only_refusal("CALL compact_table('memories')") is not None
    assert read_only_refusal("SELECT 1; SELECT 2") is not None


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_mcp(server, free_port: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "marrow.mcp",
            "--uri",
            server.uri,
            "--transport",
            "streamable-http",
            "--port",
            str(free_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", free_port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, "the MCP server exited"
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{free_port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def test_streamable_http(http_mcp: str) -> None:
    async def go() -> None:
        async with Client(http_mcp) as c:
            assert TOOLS <= {t.name for t in (await c.list_tools()).tools}
            mid = _data(await c.call_tool("remember", {"content": "over http", "namespace": "h"}))["id"]
            hits = _data(await c.call_tool("recall", {"query": "http", "namespace": "h"}))
            assert [h["id"] for h in hits] == [mid]

    run(go())


def test_marrow_down_and_back(serve, tmp_path) -> None:
    data = tmp_path / "data"
    first = serve(data_dir=data)

    async def go() -> None:
        async with _client(first.uri) as c:
            mid = _data(await c.call_tool("remember", {"content": "survives restarts", "namespace": "r"}))["id"]
            first.stop()
            message = _error(await c.call_tool("get", {"memory_id": mid}))
            assert "not reachable" in message
            # Same port: the MCP server connects again on the next call.
            second = serve(data_dir=data, port=first.port)
            for _ in range(50):
                result = await c.call_tool("get", {"memory_id": mid})
                if not result.is_error:
                    break
                await asyncio.sleep(0.2)
            assert _data(result)["content"] == "survives restarts"
            second.stop()

    run(go())


def test_marrow_client_unaffected(server) -> None:
    # The MCP module imports cleanly next to the plain client.
    with marrow.connect(server.uri) as db:
        assert db.scalar("SELECT 1") == 1
