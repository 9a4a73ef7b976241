"""`marrow.aio` against the real binary: the memory layer awaited, the event loop free while a call runs, and a
connection that comes back after a server restart (and says clearly when the server does not)."""

from __future__ import annotations

import asyncio
import time

import pytest

from marrow import MarrowConnectionError, aio


def test_memory_calls_awaited(server) -> None:
    async def go() -> None:
        async with aio.AsyncClient(server.uri) as db:
            mem = aio.AsyncMemory(db)
            mid = await mem.remember("Ada prefers tea over coffee", "ada", kind="preference")
            await mem.remember_many(["Ada moved to Lyon", "Ada plays chess"], "ada")
            hits = await mem.recall("tea or coffee?", "ada", k=2)
            assert hits[0].id == mid
            assert (await mem.get(mid)).kind == "preference"
            assert await mem.count("ada") == 3
            await mem.update(mid, content="Ada prefers green tea")
            assert [e.operation for e in await mem.history(mid)] == ["add", "update"]
            await mem.forget(mid)
            assert await mem.count("ada") == 2
            assert (await db.scalar("SELECT count(*) FROM memories")) == 2
            await mem.close()

    asyncio.run(go())


def test_the_event_loop_runs_while_a_call_waits(server) -> None:
    async def go() -> None:
        async with aio.AsyncClient(server.uri) as db:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            task = asyncio.create_task(ticker())
            # A query that takes a while on the server: the ticker keeps running meanwhile.
            started = time.monotonic()
            await db.sql("SELECT count(*) FROM generate_series(1, 30000000)")
            elapsed = time.monotonic() - started
            task.cancel()
            assert elapsed > 0.1, "the query was too quick to show anything"
            assert ticks >= 3

    asyncio.run(go())


def test_reconnects_after_a_restart(serve, tmp_path) -> None:
    data = tmp_path / "data"
    first = serve(data_dir=data)

    async def go() -> None:
        async with aio.AsyncClient(first.uri, reconnect_timeout=60, backoff=0.05) as db:
            mem = aio.AsyncMemory(db)
            mid = await mem.remember("survives restarts", "r")
            first.stop()
            restart = asyncio.get_running_loop().run_in_executor(
                None, lambda: (time.sleep(1.0), serve(data_dir=data, port=first.port))[1]
            )
            # A read during the outage waits for the server and then answers.
            record = await mem.get(mid)
            assert record.content == "survives restarts"
            assert db.reconnects == 1
            second = await restart
            # Writes work on the new connection.
            await mem.remember("after the restart", "r")
            assert await mem.count("r") == 2
            second.stop()

    asyncio.run(go())


def test_a_server_that_stays_down_is_a_clear_error(serve) -> None:
    s = serve()

    async def go() -> None:
        db = await aio.connect(s.uri, reconnect_timeout=1.0, backoff=0.05)
        assert await db.scalar("SELECT 1") == 1
        s.stop()
        started = time.monotonic()
        with pytest.raises(MarrowConnectionError, match=r"did not come back within 1 s"):
            await db.sql("SELECT 1")
        assert time.monotonic() - started < 10
        # A write is not retried: its error comes at once, after the reconnect attempt.
        with pytest.raises(MarrowConnectionError):
            await db.execute("CREATE TABLE t (x INT)")
        await db.close()
        with pytest.raises(MarrowConnectionError, match="closed"):
            await db.sql("SELECT 1")

    asyncio.run(go())


def test_connect_fails_at_once_without_a_server() -> None:
    async def go() -> None:
        with pytest.raises(MarrowConnectionError):
            await aio.connect("grpc://127.0.0.1:1", connect_timeout=2)

    asyncio.run(go())
