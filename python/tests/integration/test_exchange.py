"""Marrow's single-call statement (`DoExchange` with the path descriptor ``["marrow.sql", <statement>]``), which
``Client.sql`` uses with ``connect(one_call=True)``: the same answers as Flight SQL's prepared path, in the same session as
the client's ADBC connection, statements kept prepared per SQL text until the database changes, and clear errors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
import pytest

import marrow


def test_a_parameterized_query_answers_as_the_prepared_path(server):
    with marrow.connect(server.uri, one_call=True) as db:
        db.execute("CREATE TABLE ex_people (id BIGINT PRIMARY KEY, name VARCHAR, score DOUBLE)")
        db.execute("INSERT INTO ex_people VALUES (1, 'ada', 0.5), (2, 'bo', 1.5), (3, 'cy', 2.5)")
        sql = "SELECT id, name FROM ex_people WHERE score > $1 AND name <> $2 ORDER BY id"
        got = db.sql(sql, [1.0, "cy"])
        with db.cursor() as cur:
            cur.execute(sql, parameters=[1.0, "cy"])
            want = cur.fetch_arrow_table()
        assert got.to_pylist() == want.to_pylist() == [{"id": 2, "name": "bo"}]
        assert got.schema == want.schema
        # Run again with other values: the statement kept for this text binds them.
        assert db.sql(sql, [0.0, "zz"]).column("id").to_pylist() == [1, 2, 3]
        # Writes report their count; DDL an empty result.
        assert db.execute("UPDATE ex_people SET score = $1 WHERE id = $2", [9.0, 1]) == 1
        assert db.scalar("SELECT score FROM ex_people WHERE id = $1", [1]) == 9.0


def test_settings_are_shared_with_the_adbc_connection(server):
    with marrow.connect(server.uri, one_call=True) as db:
        with db.cursor() as cur:
            cur.execute("SET datafusion.execution.batch_size = 1234")
            cur.fetchall()
        shown = db.sql("SHOW datafusion.execution.batch_size").to_pylist()
        assert shown[0]["value"] == "1234"
        db.execute("SET datafusion.execution.batch_size = 4321")
        with db.cursor() as cur:
            cur.execute("SHOW datafusion.execution.batch_size")
            assert cur.fetch_arrow_table().to_pylist()[0]["value"] == "4321"
    # Another client is another session.
    with marrow.connect(server.uri, one_call=True) as other:
        assert other.sql("SHOW datafusion.execution.batch_size").to_pylist()[0]["value"] != "4321"


def test_a_kept_statement_follows_a_table_that_changed_shape(server):
    with marrow.connect(server.uri, one_call=True) as db:
        db.execute("CREATE TABLE ex_shape (id BIGINT, a VARCHAR)")
        db.execute("INSERT INTO ex_shape VALUES (1, 'x')")
        assert db.sql("SELECT * FROM ex_shape").column_names == ["id", "a"]
        db.execute("DROP TABLE ex_shape")
        db.execute("CREATE TABLE ex_shape (id BIGINT, b DOUBLE, c BOOLEAN)")
        db.execute("INSERT INTO ex_shape VALUES (2, 0.5, true)")
        assert db.sql("SELECT * FROM ex_shape").to_pylist() == [{"id": 2, "b": 0.5, "c": True}]


@pytest.mark.parametrize(
    "descriptor",
    [
        flight.FlightDescriptor.for_path("marrow.sql"),
        flight.FlightDescriptor.for_path("other", "SELECT 1"),
        flight.FlightDescriptor.for_path("marrow.sql", "SELECT 1", "extra"),
        flight.FlightDescriptor.for_command(b"SELECT 1"),
    ],
    ids=["no-statement", "other-kind", "extra-part", "command"],
)
def test_a_malformed_exchange_is_invalid_argument(server, descriptor):
    client = flight.FlightClient(server.uri)
    try:
        writer, reader = client.do_exchange(descriptor)
        with pytest.raises(pa.ArrowInvalid, match=r"marrow\.sql"):
            with writer:
                writer.begin(pa.schema([]))
                writer.done_writing()
                reader.read_all()
    finally:
        client.close()
    with marrow.connect(server.uri, one_call=True) as db:
        assert db.scalar("SELECT 1") == 1


def test_statement_errors_keep_their_codes(server):
    with marrow.connect(server.uri, one_call=True) as db:
        with pytest.raises(marrow.SQLError) as e:
            db.sql("SELEC 1")
        assert e.value.grpc_code == "INVALID_ARGUMENT"
        assert "gRPC client debug context" not in str(e.value)
        with pytest.raises(marrow.NotFoundError) as e:
            db.sql("SELECT * FROM ex_no_such_table WHERE id = $1", [1])
        assert e.value.grpc_code == "NOT_FOUND"
        with pytest.raises(marrow.SQLError):
            # One parameter short.
            db.sql("SELECT $1::BIGINT + $2::BIGINT", [1])
        assert db.sql("SELECT $1::BIGINT + $2::BIGINT AS s", [1, 2]).to_pylist() == [{"s": 3}]


def test_a_client_whose_session_ended_logs_in_again(serve):
    import time

    s = serve(extra_args=("--session-idle", "1s"))
    with marrow.connect(s.uri, one_call=True) as db:
        db.execute("SET datafusion.execution.batch_size = 777")
        assert db.sql("SHOW datafusion.execution.batch_size").to_pylist()[0]["value"] == "777"
        time.sleep(2.5)
        # The old session expired: the client logs in again and the statement runs in the new session, where the
        # setting is back to its default.
        assert db.scalar("SELECT 41 + 1") == 42
        assert db.sql("SHOW datafusion.execution.batch_size").to_pylist()[0]["value"] != "777"
        # The ADBC connection moved to the new session too.
        with db.cursor() as cur:
            cur.execute("SELECT 7")
            assert cur.fetchall() == [(7,)]


def test_parameters_declaring_rows_they_do_not_hold_are_refused(server):
    # A Null column takes any length for free on the wire; 2^30 parameter rows would be 2^30 statement runs (or a
    # cast allocating tens of GB). Refused as malformed data, the server up.
    batch = pa.record_batch([pa.nulls(1 << 30)], names=["0"])
    client = flight.FlightClient(server.uri)
    try:
        writer, reader = client.do_exchange(flight.FlightDescriptor.for_path("marrow.sql", "SELECT $1"))
        with pytest.raises(pa.ArrowInvalid, match="declares 1073741824 rows"):
            with writer:
                writer.begin(batch.schema)
                writer.write_batch(batch)
                writer.done_writing()
                reader.read_all()
    finally:
        client.close()
    with marrow.connect(server.uri, one_call=True) as db:
        assert db.scalar("SELECT 1") == 1
