"""Marrow from asyncio: the client and the memory layer without blocking the event loop, over a connection that
survives a server restart.

    >>> from marrow import aio
    >>> async with await aio.connect("grpc://127.0.0.1:50051") as db:
    ...     mem = aio.AsyncMemory(db)
    ...     await mem.remember("Ada prefers tea", "ada")
    ...     hits = await mem.recall("what does Ada drink?", "ada")

Each call runs the blocking client (ADBC) in a worker thread; calls on one connection are serialized (an ADBC
connection serves one call at a time), so open one connection per concurrent stream of work.

**Reconnection.** When the server is unreachable (it restarts, the network drops), the connection is opened again
with exponential backoff (``backoff`` seconds doubling up to ``max_backoff``) until ``reconnect_timeout`` seconds
have passed, then :class:`marrow.MarrowConnectionError` says how long it tried. A query (``SELECT``/``WITH``)
interrupted by the loss is run again on the new connection; a statement that writes is not (it may have been
applied before the connection broke): its error is raised, and the next call uses the new connection. Session
state (``SET`` values, prepared statements) belongs to the old session and is gone after a reconnect.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional, TypeVar

import pyarrow as pa

from .client import _REUSABLE, Client
from .client import connect as _connect
from .errors import MarrowConnectionError
from .memory import ForgetReport, MaintenanceReport, Memory, MemoryInput
from .records import Hit, MemoryEvent, MemoryRecord

T = TypeVar("T")


class AsyncClient:
    """An asyncio face of :class:`marrow.Client` that reconnects (see the module's documentation)."""

    def __init__(
        self,
        uri: str,
        user: Optional[str] = None,
        password: Optional[str] = None,
        *,
        reconnect_timeout: float = 30.0,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        **connect_options: Any,
    ) -> None:
        self.uri = uri
        self.reconnect_timeout, self.backoff, self.max_backoff = reconnect_timeout, backoff, max_backoff
        self._connect = functools.partial(_connect, uri, user, password, **connect_options)
        self._client: Optional[Client] = None
        self._lock = asyncio.Lock()
        self._closed = False
        #: Called with the new blocking client after each reconnect (the memory layer rebuilds on it).
        self.on_reconnect: list[Callable[[Client], None]] = []
        #: How many times the connection was opened again.
        self.reconnects = 0

    async def open(self) -> AsyncClient:
        """Connect now (raising at once if the server is not there), rather than on the first call."""
        async with self._lock:
            if self._client is None:
                self._client = await asyncio.to_thread(self._connect)
        return self

    async def __aenter__(self) -> AsyncClient:
        return await self.open()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            client, self._client = self._client, None
            if client is not None:
                await asyncio.to_thread(client.close)

    @property
    def client(self) -> Client:
        """The current blocking client (it changes after a reconnect)."""
        if self._client is None:
            raise MarrowConnectionError("the async client is not connected: await open() first")
        return self._client

    async def run(self, call: Callable[[Client], T], *, retry: bool) -> T:
        """``call(client)`` in a worker thread; on a lost connection, reconnect (and run it again when ``retry``)."""
        async with self._lock:
            if self._closed:
                raise MarrowConnectionError("the async client is closed")
            if self._client is None:
                await self._reconnect(None)
            try:
                return await asyncio.to_thread(call, self.client)
            except MarrowConnectionError as e:
                await self._reconnect(e)
                if not retry:
                    raise
            return await asyncio.to_thread(call, self.client)

    async def _reconnect(self, cause: Optional[BaseException]) -> None:
        old, self._client = self._client, None
        if old is not None:
            try:
                await asyncio.to_thread(old.close)
            except Exception:  # the old connection is broken; closing it is best effort
                pass
        deadline = time.monotonic() + self.reconnect_timeout
        delay = self.backoff
        last: BaseException | None = cause
        while True:
            try:
                self._client = await asyncio.to_thread(self._connect)
                break
            except MarrowConnectionError as e:
                last = e
            if time.monotonic() + delay > deadline:
                raise MarrowConnectionError(
                    f"Marrow at {self.uri} did not come back within {self.reconnect_timeout:g} s: {last}"
                ) from last
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)
        if old is not None:
            self.reconnects += 1
            for hook in self.on_reconnect:
                hook(self._client)

    async def sql(self, query: str, params: Optional[Sequence[Any]] = None) -> pa.Table:
        """:meth:`marrow.Client.sql`; a query is run again after a reconnect, a statement that writes is not."""
        return await self.run(lambda c: c.sql(query, params), retry=bool(_REUSABLE.match(query)))

    async def execute(self, query: str, params: Optional[Sequence[Any]] = None) -> int:
        """:meth:`marrow.Client.execute` (never run twice)."""
        return await self.run(lambda c: c.execute(query, params), retry=False)

    async def scalar(self, query: str, params: Optional[Sequence[Any]] = None) -> Any:
        return await self.run(lambda c: c.scalar(query, params), retry=bool(_REUSABLE.match(query)))


async def connect(uri: str = "grpc://127.0.0.1:50051", *args: Any, **kwargs: Any) -> AsyncClient:
    """An :class:`AsyncClient`, connected (arguments as :func:`marrow.connect`, plus ``reconnect_timeout``,
    ``backoff`` and ``max_backoff``)."""
    return await AsyncClient(uri, *args, **kwargs).open()


class AsyncMemory:
    """:class:`marrow.Memory` for asyncio, over an :class:`AsyncClient`: the same methods, awaited. Reads are run
    again after a reconnect; writes are not (see the module's documentation)."""

    def __init__(self, db: AsyncClient, **memory_options: Any) -> None:
        self.db = db
        self._options = memory_options
        self._memory: Optional[Memory] = None
        db.on_reconnect.append(self._rebuild)

    def _rebuild(self, client: Client) -> None:
        old, self._memory = self._memory, None
        if old is not None:
            try:
                old.close()
            except Exception:  # its connection is gone; pending access-log rows went with it
                pass

    def _on(self, client: Client) -> Memory:
        if self._memory is None or self._memory.db is not client:
            self._memory = Memory(client, **self._options)
        return self._memory

    async def _read(self, call: Callable[[Memory], T]) -> T:
        return await self.db.run(lambda c: call(self._on(c)), retry=True)

    async def _write(self, call: Callable[[Memory], T]) -> T:
        return await self.db.run(lambda c: call(self._on(c)), retry=False)

    async def remember(self, content: str, namespace: str = "default", **kwargs: Any) -> str:
        return await self._write(lambda m: m.remember(content, namespace, **kwargs))

    async def remember_many(self, items: Sequence[MemoryInput], namespace: str = "default") -> list[str]:
        return await self._write(lambda m: m.remember_many(items, namespace))

    async def recall(self, query: Optional[str], namespace: str = "default", k: int = 5, **kwargs: Any) -> list[Hit]:
        return await self._read(lambda m: m.recall(query, namespace, k, **kwargs))

    async def get(self, memory_id: str, **kwargs: Any) -> MemoryRecord:
        return await self._read(lambda m: m.get(memory_id, **kwargs))

    async def recent(self, namespace: str, **kwargs: Any) -> list[MemoryRecord]:
        return await self._read(lambda m: m.recent(namespace, **kwargs))

    async def count(self, namespace: Optional[str] = None, **kwargs: Any) -> int:
        return await self._read(lambda m: m.count(namespace, **kwargs))

    async def history(self, memory_id: str) -> list[MemoryEvent]:
        return await self._read(lambda m: m.history(memory_id))

    async def update(self, memory_id: str, **kwargs: Any) -> MemoryRecord:
        return await self._write(lambda m: m.update(memory_id, **kwargs))

    async def forget(self, memory_id: str, *, purge: bool = False) -> ForgetReport:
        return await self._write(lambda m: m.forget(memory_id, purge=purge))

    async def maintain(self, namespace: Optional[str] = None) -> MaintenanceReport:
        return await self._write(lambda m: m.maintain(namespace))

    async def close(self) -> None:
        """Flush what the memory layer holds (the access log); the client stays open."""
        memory, self._memory = self._memory, None
        if memory is not None:
            await self.db.run(lambda _c: memory.close(), retry=False)
