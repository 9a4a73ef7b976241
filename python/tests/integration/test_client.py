"""marrow.connect / Client against the real server: SQL, ingest, DataFrames, errors mapped from gRPC codes."""

from __future__ import annotations

import socket
import time

import adbc_driver_manager
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import marrow


def test_sql_scalar_execute_and_params(server):
    with marrow.connect(server.uri) as db:
        assert isinstance(db, marrow.Client)
        assert db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE, v FLOAT[3])") == 0
        assert db.execute("INSERT INTO t VALUES ($1, $2, $3, $4)", [1, "one", 0.5, [1.0, 0.0, 0.0]]) == 1
        assert db.execute("INSERT INTO t VALUES (2, 'two', 1.5, [0, 1, 0]), (3, NULL, NULL, [0, 0, 1])") == 2
        table = db.sql("SELECT id, name FROM t WHERE score > $1 ORDER BY id", [0.1])
        assert isinstance(table, pa.Table)
        assert table.to_pylist() == [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]
        assert db.scalar("SELECT count(*) FROM t WHERE name IS NULL") == 1
        assert db.scalar("SELECT id FROM t WHERE id > 100") is None
        nearest = db.sql("SELECT id FROM t ORDER BY cosine_distance(v, $1) LIMIT 1", [[0.1, 0.9, 0.0]])
        assert nearest.column("id").to_pylist() == [2]
        frame = db.sql_pandas("SELECT id, score FROM t ORDER BY id")
        assert isinstance(frame, pd.DataFrame) and frame["id"].tolist() == [1, 2, 3]
        pframe = db.sql_polars("SELECT id, score FROM t ORDER BY id")
        assert isinstance(pframe, pl.DataFrame) and pframe["score"].to_list()[:2] == [0.5, 1.5]


def test_ingest_arrow_pandas_polars_and_modes(server):
    with marrow.connect(server.uri) as db:
        assert db.ingest("ing", pa.table({"id": [1, 2], "label": ["a", "b"]}), mode="create") == 2
        assert db.ingest("ing", pd.DataFrame({"id": [3], "label": ["c"]})) == 1
        assert db.ingest("ing", pl.DataFrame({"id": [4, 5], "label": ["d", "e"]}), mode="append") == 2
        assert db.scalar("SELECT count(*) FROM ing") == 5
        db.ingest("ing", pa.table({"id": [9], "label": ["z"]}), mode="replace")
        assert db.sql("SELECT id, label FROM ing").to_pylist() == [{"id": 9, "label": "z"}]
        db.ingest("ing2", pa.table({"x": [1.0]}), mode="create_append")
        db.ingest("ing2", pa.table({"x": [2.0]}), mode="create_append")
        assert db.scalar("SELECT sum(x) FROM ing2") == 3.0
        with pytest.raises(marrow.NotFoundError):
            db.ingest("missing", pa.table({"x": [1]}))
        with pytest.raises(marrow.AlreadyExistsError):
            db.ingest("ing", pa.table({"id": [1], "label": ["a"]}), mode="create")
        with pytest.raises(marrow.InvalidArgumentError):
            db.ingest("ing", {"id": [1]})  # type: ignore[arg-type]
        with pytest.raises(marrow.InvalidArgumentError):
            db.ingest("bad name; DROP TABLE ing", pa.table({"id": [1]}))
        with pytest.raises(marrow.InvalidArgumentError):
            db.ingest("ing", pa.table({"id": [1]}), mode="upsert")  # type: ignore[arg-type]
        # A row the table refuses (wrong type) writes nothing.
        with pytest.raises(marrow.MarrowError):
            db.ingest("ing", pa.table({"id": ["not a number"], "label": ["x"]}))
        assert db.scalar("SELECT count(*) FROM ing") == 1


def test_errors_are_mapped_from_grpc_codes(server):
    with marrow.connect(server.uri) as db:
        db.execute("CREATE TABLE e (id BIGINT PRIMARY KEY)")
        db.execute("INSERT INTO e VALUES (1)")
        cases = [
            ("SELEC 1", marrow.SQLError, "INVALID_ARGUMENT"),
            ("SELECT * FROM no_such_table", marrow.NotFoundError, "NOT_FOUND"),
            ("CREATE TABLE e (id BIGINT)", marrow.AlreadyExistsError, "ALREADY_EXISTS"),
            ("ALTER TABLE e ADD COLUMN x INT", marrow.NotSupportedError, "UNIMPLEMENTED"),
            ("COPY (SELECT 1) TO 'x.parquet'", marrow.MarrowError, None),  # no --export-root: refused
            ("INSERT INTO memories (id, content, embedding) VALUES ('x', 'y', [1.0, 2.0])", marrow.SQLError, None),
        ]
        for sql, cls, code in cases:
            with pytest.raises(cls) as e:
                db.sql(sql)
            # Still the DB-API classes that plain ADBC code catches.
            assert isinstance(e.value, adbc_driver_manager.Error)
            if code:
                assert e.value.grpc_code == code, (sql, e.value.grpc_code, str(e.value))
        with pytest.raises(marrow.InvalidArgumentError):
            db.sql("   ")
        assert db.scalar("SELECT count(*) FROM e") == 1
        assert db.scalar("SELECT count(*) FROM memories") == 0


def test_server_down_fails_fast_on_connect():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(marrow.MarrowConnectionError) as e:
        marrow.connect(f"grpc://127.0.0.1:{port}", connect_timeout=3)
    assert time.monotonic() - started < 5
    assert "cannot connect to Marrow" in str(e.value) and e.value.grpc_code == "UNAVAILABLE"
    assert isinstance(e.value, ConnectionError)  # the builtin too


def test_credentials_are_checked_on_connect(auth_server):
    for user, password in [("ada", "wrong"), ("bob", "lovelace"), (None, None)]:
        started = time.monotonic()
        with pytest.raises(marrow.AuthenticationError) as e:
            marrow.connect(auth_server.uri, user, password)
        assert time.monotonic() - started < 10
        assert e.value.grpc_code == "UNAUTHENTICATED"
    with marrow.connect(auth_server.uri, "ada", "lovelace") as db:
        assert db.scalar("SELECT 41 + 1") == 42


def test_client_passes_through_to_adbc_and_closes(server):
    db = marrow.connect(server.uri)
    with db, db.cursor() as cur:
        cur.execute("SELECT 7 AS x")
        assert cur.fetchone() == (7,)
        assert db.adbc_get_info()["vendor_name"] == "marrow"
    assert db.closed
    with pytest.raises(marrow.MarrowError):
        db.sql("SELECT 1")


def test_sql_reader_streams_the_result(server):
    with marrow.connect(server.uri) as db:
        reader = db.sql_reader("SELECT value FROM generate_series(1, 100000) ORDER BY value")
        assert isinstance(reader, pa.RecordBatchReader) and reader.schema.names == ["value"]
        sizes, total = [], 0
        for batch in reader:
            sizes.append(batch.num_rows)
            total += sum(batch.column(0).to_pylist())
        assert sum(sizes) == 100000 and len(sizes) > 1, sizes  # batches as they come, not one table
        assert total == 100000 * 100001 // 2
        assert db.sql_reader("SELECT $1 + 1 AS x", [41]).read_all().to_pylist() == [{"x": 42}]
        with pytest.raises(marrow.NotFoundError):
            db.sql_reader("SELECT * FROM no_such_table")
        with pytest.raises(marrow.InvalidArgumentError):
            db.sql_reader(" ")
        # A reader dropped unread releases its cursor; the client goes on.
        unread = db.sql_reader("SELECT value FROM generate_series(1, 100000)")
        unread.close()
        del unread
        assert db.scalar("SELECT 41 + 1") == 42


def test_set_lasts_for_the_clients_session(server):
    with marrow.connect(server.uri) as a, marrow.connect(server.uri) as b:
        a.execute("SET datafusion.execution.batch_size = 4321")
        q = "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'"
        assert a.scalar(q) == "4321"
        assert b.scalar(q) != "4321"
