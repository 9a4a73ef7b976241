"""Marrow as an MCP server: an agent's memory tools over the Model Context Protocol (PyPI ``mcp`` 2.x).

Run it next to a Marrow server (``pip install 'marrow[mcp]'``)::

    marrow-mcp --uri grpc://127.0.0.1:50051                 # stdio, for a desktop agent or an IDE
    python -m marrow.mcp --transport streamable-http --port 8765

Tools: ``remember``, ``recall`` (the modes and filters of :meth:`marrow.Memory.recall`), ``get``, ``update``,
``forget``, ``history`` and ``sql`` (queries only, unless the server was started with ``--allow-sql-writes``).
Resources: ``marrow://namespaces/{namespace}/recent``, a namespace's newest memories.

The connection (``--uri``, ``--user``, ``--password`` or ``MARROW_URI``, ``MARROW_USER``, ``MARROW_PASSWORD``) is
opened on the first call and opened again after the Marrow server went away, so the MCP server starts and keeps
answering while Marrow is down: a call then fails with a tool error saying so. Every error a call meets comes back
as an MCP tool error carrying Marrow's message (invalid arguments, unknown memory ids, refused SQL), never a stack
trace, and nothing is written by a call that fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date, datetime, timedelta
from typing import Any, Callable, Literal, Optional, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

import marrow
from marrow.errors import MarrowConnectionError, MarrowError
from marrow.memory import Memory
from marrow.records import Hit, MemoryRecord

#: Rows the ``sql`` tool returns at most (the rest is cut, and the result says so).
SQL_ROW_LIMIT = 1000

_INSTRUCTIONS = """\
Long-term memory backed by Marrow. Store facts, preferences and events worth keeping with `remember`; before
answering, `recall` what is relevant (hybrid keyword + semantic search by default). Memories live in namespaces
(one per user, agent or project). `update` corrects a memory, `forget` deletes it (its history is kept),
`history` shows how a memory changed. `sql` runs read-only SQL over the tables (memories, memory_events, ...)."""

T = TypeVar("T")


class MemoryTools:
    """The tools' logic over one lazily opened, self-healing Marrow connection; the MCP layer only adapts it."""

    def __init__(
        self,
        uri: str,
        user: Optional[str] = None,
        password: Optional[str] = None,
        *,
        allow_sql_writes: bool = False,
        connect_timeout: float = 5.0,
    ) -> None:
        self.uri, self.user, self.password = uri, user, password
        self.allow_sql_writes = allow_sql_writes
        self.connect_timeout = connect_timeout
        self._memory: Optional[Memory] = None
        self._lock = threading.Lock()

    def _connected(self) -> Memory:
        if self._memory is None:
            db = marrow.connect(self.uri, self.user, self.password, connect_timeout=self.connect_timeout)
            self._memory = Memory(db)
        return self._memory

    def run(self, call: Callable[[Memory], T]) -> T:
        """``call`` on the memory layer, as a tool: Marrow's errors become tool errors; a lost connection is
        dropped so the next call connects again."""
        with self._lock:
            try:
                return call(self._connected())
            except MarrowConnectionError as e:
                self._reset()
                raise ToolError(f"Marrow at {self.uri} is not reachable: {e}") from e
            except MarrowError as e:
                raise ToolError(str(e)) from e
            except (TypeError, ValueError) as e:
                raise ToolError(f"invalid argument: {e}") from e

    def _reset(self) -> None:
        memory, self._memory = self._memory, None
        if memory is not None:
            try:
                memory.close()
                memory.db.close()
            except Exception:  # the connection is already gone; closing it is best effort
                pass

    def close(self) -> None:
        with self._lock:
            self._reset()

    # ---- the tools ---------------------------------------------------------------------------------------------

    def remember(
        self,
        content: str,
        namespace: str,
        kind: str,
        importance: float,
        metadata: Optional[dict[str, Any]],
        ttl_seconds: Optional[float],
    ) -> dict[str, Any]:
        ttl = None if ttl_seconds is None else timedelta(seconds=ttl_seconds)
        memory_id = self.run(
            lambda m: m.remember(content, namespace, kind=kind, importance=importance, metadata=metadata, ttl=ttl)
        )
        return {"id": memory_id, "namespace": namespace}

    def recall(
        self,
        query: str,
        namespace: str,
        k: int,
        mode: Optional[str],
        filters: Optional[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        def recall(m: Memory) -> list[Hit]:
            hits = m.recall(query, namespace, k, filters, mode=mode)
            if not hits:
                # An empty answer from a namespace that does not exist is most likely a misspelt name: say so.
                m.require_namespace(namespace)
            return hits

        return [_hit(h) for h in self.run(recall)]

    def get(self, memory_id: str) -> dict[str, Any]:
        return _record(self.run(lambda m: m.get(memory_id)))

    def update(
        self,
        memory_id: str,
        content: Optional[str],
        importance: Optional[float],
        metadata: Optional[dict[str, Any]],
        kind: Optional[str],
    ) -> dict[str, Any]:
        record = self.run(
            lambda m: m.update(memory_id, content=content, importance=importance, metadata=metadata, kind=kind)
        )
        return _record(record)

    def forget(self, memory_id: str, purge: bool) -> dict[str, Any]:
        return _jsonable(asdict(self.run(lambda m: m.forget(memory_id, purge=purge))))

    def history(self, memory_id: str) -> list[dict[str, Any]]:
        return [_jsonable(asdict(e)) for e in self.run(lambda m: m.history(memory_id))]

    def recent(self, namespace: str, limit: int = 20) -> list[dict[str, Any]]:
        def recent(m: Memory) -> list[MemoryRecord]:
            m.require_namespace(namespace)
            return m.recent(namespace, limit=limit)

        return [_record(r) for r in self.run(recent)]

    def sql(self, query: str) -> dict[str, Any]:
        if not self.allow_sql_writes:
            refusal = read_only_refusal(query)
            if refusal is not None:
                raise ToolError(refusal)
        table = self.run(lambda m: m.db.sql(query))
        rows = table.slice(0, SQL_ROW_LIMIT).to_pylist()
        return {
            "columns": table.column_names,
            "rows": _jsonable(rows),
            "row_count": table.num_rows,
            "truncated": table.num_rows > SQL_ROW_LIMIT,
        }


# ---- read-only SQL ----------------------------------------------------------------------------------------------

_READ_FIRST = {"SELECT", "WITH", "VALUES", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "TABLE"}
# Words that only a statement that writes or changes the session contains (outside strings and quoted names).
_WRITE_WORDS = {
    "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "COPY", "CREATE", "DROP", "ALTER", "TRUNCATE", "CALL", "SET",
    "RESET", "INTO", "PREPARE", "EXECUTE", "DEALLOCATE", "OPTIMIZE", "VACUUM", "GRANT", "REVOKE", "RESTORE", "REPLACE",
}  # fmt: skip
_TOKEN = re.compile(
    r"""'(?:[^']|'')*'?        # a string literal
      | "(?:[^"]|"")*"?        # a quoted name
      | --[^\n]*               # a line comment
      | /\*.*?(?:\*/|$)        # a block comment
      | (?P<word>[A-Za-z_][A-Za-z_0-9]*)
      | (?P<semi>;)
      | .""",
    re.VERBOSE | re.DOTALL,
)


def read_only_refusal(query: str) -> Optional[str]:
    """Why the read-only ``sql`` tool refuses ``query`` (None: it is one query). Strict on purpose: one statement
    that reads (SELECT, WITH, VALUES, SHOW, DESCRIBE, EXPLAIN of those), no word of a statement that writes outside
    strings and quoted names, so ``EXPLAIN ANALYZE INSERT …``, ``SELECT … INTO`` and ``…; DROP …`` are refused."""
    if not isinstance(query, str) or not query.strip():
        return "sql: the query is empty"
    words: list[str] = []
    statements_ended = False
    for m in _TOKEN.finditer(query):
        if m.group("semi"):
            statements_ended = True
        elif m.group("word"):
            if statements_ended:
                return "sql: one statement at a time"
            words.append(m.group("word").upper())
    if not words or words[0] not in _READ_FIRST:
        return (
            "sql is read-only: only queries (SELECT, WITH, VALUES, SHOW, DESCRIBE, EXPLAIN) run; use the remember, "
            "update and forget tools to change memories, or start the MCP server with --allow-sql-writes"
        )
    written = sorted(set(words) & _WRITE_WORDS)
    if written:
        return (
            f"sql is read-only: the statement contains {', '.join(written)}; only queries run (start the MCP "
            "server with --allow-sql-writes to allow writes)"
        )
    return None


# ---- results as JSON --------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    return str(value)


def _record(r: MemoryRecord) -> dict[str, Any]:
    return _jsonable(asdict(r))


def _hit(h: Hit) -> dict[str, Any]:
    out = _record(h.memory)
    out["distance"] = _jsonable(h.distance)
    out["score"] = _jsonable(h.rank_score)
    return out


# ---- the MCP server ---------------------------------------------------------------------------------------------

RecallMode = Literal["hybrid", "vector", "keyword"]


def build_server(tools: MemoryTools) -> MCPServer:
    """The MCP server exposing ``tools``."""
    server = MCPServer("marrow", instructions=_INSTRUCTIONS)

    @server.tool()
    def remember(
        content: str,
        namespace: str = "default",
        kind: str = "note",
        importance: float = 0.5,
        metadata: Optional[dict[str, Any]] = None,
        ttl_seconds: Optional[float] = None,
    ) -> dict[str, Any]:
        """Store one memory (a fact, preference, event or note worth keeping) and return its id.

        content: the memory as text; it is embedded by Marrow for semantic recall.
        namespace: whose memory it is (a user, agent or project); created on first use.
        kind: a label such as "fact", "preference", "event" or "note".
        importance: 0 to 1, how much it matters (ranks near-ties in recall).
        metadata: JSON object of extra fields, filterable in recall (e.g. {"source": "chat", "turn": 3}).
        ttl_seconds: forget the memory after this many seconds (omit to keep it).
        """
        return tools.remember(content, namespace, kind, importance, metadata, ttl_seconds)

    @server.tool()
    def recall(
        query: str,
        namespace: str = "default",
        k: int = 5,
        mode: Optional[RecallMode] = None,
        filters: Optional[dict[str, Any]] = None,
    ) -> list[dict[str, Any]]:
        """The k memories of a namespace most relevant to a query, best first.

        mode: "hybrid" (default: keyword BM25 and semantic search fused; finds names, dates and paraphrases),
        "vector" (semantic only) or "keyword" (BM25 only).
        filters: mem0's filter language over columns and metadata keys, e.g. {"kind": "fact"},
        {"importance": {"gte": 0.7}}, {"AND": [{"source": "chat"}, {"turn": {"lt": 10}}]}; operators eq, ne, gt,
        gte, lt, lte, in, nin, contains, icontains, and AND / OR / NOT.
        Each result has id, content, kind, importance, metadata, created_at, distance (cosine, lower is closer)
        and score (the mode's ranking score, higher is better).
        """
        return tools.recall(query, namespace, k, mode, filters)

    @server.tool()
    def get(memory_id: str) -> dict[str, Any]:
        """One memory by its id (as returned by remember or recall)."""
        return tools.get(memory_id)

    @server.tool()
    def update(
        memory_id: str,
        content: Optional[str] = None,
        importance: Optional[float] = None,
        metadata: Optional[dict[str, Any]] = None,
        kind: Optional[str] = None,
    ) -> dict[str, Any]:
        """Correct a memory: new content (re-embedded), importance, kind, or a metadata patch (keys set; a key set
        to null is removed). The change is recorded in the memory's history. Returns the memory as it now is."""
        return tools.update(memory_id, content, importance, metadata, kind)

    @server.tool()
    def forget(memory_id: str, purge: bool = False) -> dict[str, Any]:
        """Delete a memory. Its history stays (a "delete" event), unless purge is true, which erases the memory
        and its history from the current version."""
        return tools.forget(memory_id, purge)

    @server.tool()
    def history(memory_id: str) -> list[dict[str, Any]]:
        """How a memory came to be: its events (add, update, delete, merge, ...) oldest first, with old and new
        content."""
        return tools.history(memory_id)

    read_only = "" if tools.allow_sql_writes else " Read-only: only queries run."

    @server.tool(
        description=f"""Run one SQL statement on Marrow (Apache DataFusion SQL) and return its rows (at most
{SQL_ROW_LIMIT}).{read_only} Tables: memories (id, namespace, kind, content, embedding, importance, created_at,
updated_at, last_accessed_at, access_count, metadata JSON, expires_at), memory_events (the history), and
functions such as fts_search(table, column, query, k), embed(text), cosine_distance(a, b) and metadata ->> 'key'."""
    )
    def sql(query: str) -> dict[str, Any]:
        return tools.sql(query)

    @server.resource(
        "marrow://namespaces/{namespace}/recent",
        name="recent-memories",
        description="The 20 newest memories of a namespace, as JSON.",
        mime_type="application/json",
    )
    def recent(namespace: str) -> str:
        return json.dumps(tools.recent(namespace, 20))

    return server


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="marrow-mcp",
        description="Serve Marrow's memory tools (remember, recall, get, update, forget, history, sql) over the "
        "Model Context Protocol, connected to a running Marrow server.",
    )
    parser.add_argument(
        "--uri",
        default=os.environ.get("MARROW_URI", "grpc://127.0.0.1:50051"),
        help="the Marrow server (default: $MARROW_URI or grpc://127.0.0.1:50051)",
    )
    parser.add_argument("--user", default=os.environ.get("MARROW_USER"), help="login user (default: $MARROW_USER)")
    parser.add_argument(
        "--password",
        default=None,
        help="login password (prefer $MARROW_PASSWORD: arguments are visible in the process list)",
    )
    parser.add_argument(
        "--transport",
        choices=["stdio", "streamable-http"],
        default="stdio",
        help="stdio (default; the MCP client starts this process) or streamable-http (a long-running server)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="streamable-http: address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="streamable-http: port to listen on (default 8765)")
    parser.add_argument(
        "--allow-sql-writes",
        action="store_true",
        help="let the sql tool run statements that write (INSERT, UPDATE, DELETE, DDL); off by default",
    )
    args = parser.parse_args(argv)
    password = args.password if args.password is not None else os.environ.get("MARROW_PASSWORD")
    tools = MemoryTools(args.uri, args.user, password, allow_sql_writes=args.allow_sql_writes)
    server = build_server(tools)
    try:
        if args.transport == "stdio":
            server.run("stdio")
        else:
            server.run("streamable-http", host=args.host, port=args.port)
    finally:
        tools.close()


if __name__ == "__main__":
    main()
