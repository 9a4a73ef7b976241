"""The hot path: prepared queries reused per SQL text, group commit of concurrent appends, the access log written
in the background, upkeep compacting what small writes fragment. Timings stay in bench/; these check behaviour."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest

import marrow


def rpc_calls(server, since: int = 0) -> list[str]:
    """The RPC paths the server logged (it runs with marrow::rpc=trace), from log line `since` on."""
    calls = []
    for line in server.log[since:]:
        m = re.search(r'path="?(/arrow\.flight\.protocol\.FlightService/\w+)', line)
        if m and "marrow::rpc" in line:
            calls.append(m.group(1).rsplit("/", 1)[1])
    return calls


def run_a_query_twice(server, db) -> tuple[str, int]:
    """Make table t with two rows, run one parameterized query on it twice; the query, and the server's log line
    count between the two runs (for `rpc_calls`)."""
    db.execute("CREATE TABLE t (id BIGINT, name TEXT)")
    db.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    query = "SELECT name FROM t WHERE id = $1"
    assert db.scalar(query, [1]) == "one"
    mark = len(server.log)
    assert db.scalar(query, [2]) == "two"
    return query, mark


def test_a_statement_is_one_call_by_default(serve):
    server = serve(extra_args=("--log", "info,marrow::rpc=trace"))
    with marrow.connect(server.uri) as db:
        query, mark = run_a_query_twice(server, db)
        assert db.execute("INSERT INTO t VALUES ($1, $2)", [3, "three"]) == 1
        assert rpc_calls(server, mark) == ["DoExchange", "DoExchange"]
        assert db.scalar(query, [3]) == "three"


def test_a_query_run_again_reuses_its_prepared_statement(serve):
    server = serve(extra_args=("--log", "info,marrow::rpc=trace"))
    with marrow.connect(server.uri, one_call=False) as db:
        query, mark = run_a_query_twice(server, db)
        calls = rpc_calls(server, mark)
        # Bind, plan, fetch: no CreatePreparedStatement / ClosePreparedStatement (DoAction) the second time.
        assert calls == ["DoPut", "GetFlightInfo", "DoGet"], calls
        # Writes in between are seen: the statement runs against the latest version every time.
        db.execute("INSERT INTO t VALUES (3, 'three')")
        assert db.scalar(query, [3]) == "three"
        assert db.scalar("SELECT count(*) FROM t") == 3
        assert db.scalar("SELECT count(*) FROM t") == 3


def test_a_prepared_query_whose_table_changed_shape_is_prepared_again(server):
    with marrow.connect(server.uri, one_call=False) as db:
        db.execute("CREATE TABLE s (id BIGINT, a TEXT)")
        db.execute("INSERT INTO s VALUES (1, 'x')")
        assert db.sql("SELECT * FROM s").column_names == ["id", "a"]
        db.execute("DROP TABLE s")
        db.execute("CREATE TABLE s (id BIGINT, a TEXT, b DOUBLE)")
        db.execute("INSERT INTO s VALUES (2, 'y', 0.5)")
        table = db.sql("SELECT * FROM s")
        assert table.column_names == ["id", "a", "b"]
        assert table.to_pylist() == [{"id": 2, "a": "y", "b": 0.5}]
        # Errors still come through, and the cache stays bounded.
        with pytest.raises(marrow.NotFoundError, match="nope"):
            db.sql("SELECT nope FROM s")
        db.prepared_cache_size = 2
        for i in range(5):
            assert db.scalar(f"SELECT {i}") == i
        assert len(db._prepared) == 2


def test_concurrent_remembers_all_land_and_keys_stay_unique(server):
    """Eight clients remember at once (group commit merges their appends); every acknowledged memory is there once,
    and a key written twice fails for exactly one of the writers."""
    with marrow.connect(server.uri) as db:
        marrow.Memory(db)
    errors: list[BaseException] = []
    dup_errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with marrow.connect(server.uri) as c:
                mem = marrow.Memory(c)
                for i in range(15):
                    mem.remember(
                        f"writer {w} note {i}",
                        namespace="g",
                        id=f"w{w}-{i}",
                        embedding=np.eye(384, dtype=np.float32)[(w * 15 + i) % 384],
                    )
                try:
                    mem.remember("contested", namespace="g", id="same", embedding=np.eye(384, dtype=np.float32)[0])
                except marrow.MarrowError as e:
                    dup_errors.append(e)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(dup_errors) == 7, dup_errors
    assert all("duplicate key" in str(e) for e in dup_errors)
    with marrow.connect(server.uri) as db:
        assert db.scalar("SELECT count(*) FROM memories WHERE namespace = 'g'") == 8 * 15 + 1
        assert db.scalar("SELECT count(DISTINCT id) FROM memories WHERE namespace = 'g'") == 8 * 15 + 1
        assert db.scalar("SELECT count(*) FROM memories WHERE id = 'same'") == 1


def test_access_log_is_written_in_the_background_and_flushed(server):
    with marrow.connect(server.uri) as db:
        mem = marrow.Memory(db)
        assert mem.access_log == "background"
        ids = [mem.remember(f"fact {i}", namespace="bg", embedding=np.eye(384, dtype=np.float32)[i]) for i in range(3)]
        for i in range(5):
            assert mem.recall(None, "bg", k=2, embedding=np.eye(384, dtype=np.float32)[i % 3])
        assert mem.flush_access_log() >= 0
        assert db.scalar("SELECT count(*) FROM memory_access_log WHERE namespace = 'bg'") == 10
        report = mem.maintain()
        assert report is not None
        rows = db.sql("SELECT id, access_count FROM memories WHERE namespace = 'bg'").to_pylist()
        counts = {r["id"]: r["access_count"] for r in rows}
        assert sum(counts.values()) == 10 and set(counts) == set(ids)
        mem.close()
        # After close, recall logs synchronously.
        mem.recall(None, "bg", k=1, embedding=np.eye(384, dtype=np.float32)[0])
        assert db.scalar("SELECT count(*) FROM memory_access_log WHERE namespace = 'bg'") == 1
        off = marrow.Memory(db, access_log="off")
        off.recall(None, "bg", k=1, embedding=np.eye(384, dtype=np.float32)[0])
        assert db.scalar("SELECT count(*) FROM memory_access_log WHERE namespace = 'bg'") == 1
        with pytest.raises(marrow.InvalidArgumentError):
            marrow.Memory(db, access_log="sometimes")


def test_background_upkeep_compacts_a_table_of_small_writes(serve):
    server = serve(extra_args=("--upkeep-interval", "1", "--compact-min-fragments", "4"))
    with marrow.connect(server.uri) as db:
        db.execute("CREATE TABLE small (id BIGINT PRIMARY KEY, v TEXT)")
        for i in range(6):
            db.execute("INSERT INTO small VALUES ($1, $2)", [i, f"v{i}"])
        # Six appends, six versions; upkeep rewrites them into one fragment within a few passes.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ops = db.sql("SELECT operation FROM marrow_versions('small') ORDER BY version").column(0).to_pylist()
            if "Rewrite" in ops:
                break
            time.sleep(0.5)
        assert "Rewrite" in ops, ops
        assert db.sql("SELECT id, v FROM small ORDER BY id").to_pylist() == [{"id": i, "v": f"v{i}"} for i in range(6)]
        with pytest.raises(marrow.SQLError, match="duplicate key"):
            db.execute("INSERT INTO small VALUES (3, 'again')")
