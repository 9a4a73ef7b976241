"""Marrow over Flight SQL from Python: ADBC (the Go driver) used directly, a raw pyarrow.flight client, TLS and
auth."""

from __future__ import annotations

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

import marrow


def test_execute_with_parameters_and_fetch(server):
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE pets (id BIGINT PRIMARY KEY, name VARCHAR, weight DOUBLE)")
        cur.execute("INSERT INTO pets VALUES (1, 'rex', 30.5), (2, 'tom', 4.0), (3, 'kit', 3.5)")
        cur.execute("SELECT id, name FROM pets WHERE weight < $1 ORDER BY id", parameters=[10.0])
        table = cur.fetch_arrow_table()
        assert table.to_pydict() == {"id": [2, 3], "name": ["tom", "kit"]}
        cur.execute("SELECT name FROM pets WHERE id = $1 AND name <> $2", parameters=[1, "x"])
        assert cur.fetchall() == [("rex",)]
        cur.execute("SELECT id, weight FROM pets ORDER BY id")
        df = cur.fetch_polars()
        assert df["weight"].to_list() == [30.5, 4.0, 3.5]


def test_executemany_streams_parameter_rows(server):
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE kv (k VARCHAR PRIMARY KEY, v BIGINT)")
        rows = [(f"key{i}", i * i) for i in range(50)]
        cur.executemany("INSERT INTO kv VALUES ($1, $2)", rows)
        cur.execute("SELECT count(*), sum(v) FROM kv")
        assert cur.fetchone() == (50, sum(i * i for i in range(50)))
        # executemany of an INSERT is one statement and one commit: a duplicate in the middle writes nothing.
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.executemany("INSERT INTO kv VALUES ($1, $2)", [("new1", 1), ("key3", 2), ("new2", 3)])
        assert "duplicate key" in str(e.value) and "key3" in str(e.value)
        cur.execute("SELECT count(*) FROM kv WHERE k LIKE 'new%'")
        assert cur.fetchone() == (0,)
        cur.execute("UPDATE kv SET v = -1 WHERE k = $1", parameters=["key3"])
        cur.execute("SELECT v FROM kv WHERE k = 'key3'")
        assert cur.fetchone() == (-1,)


def test_update_from_and_delete_using_with_parameters(server):
    """Prepared UPDATE … FROM and DELETE … USING (forms DataFusion cannot plan) take bound parameters."""
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE stock (sku VARCHAR PRIMARY KEY, qty BIGINT)")
        cur.execute("CREATE TABLE delivery (sku VARCHAR, added BIGINT)")
        cur.execute("INSERT INTO stock VALUES ('a', 1), ('b', 2), ('c', 3)")
        cur.execute("INSERT INTO delivery VALUES ('a', 10), ('b', 20), ('c', 30)")
        cur.execute(
            "UPDATE stock SET qty = stock.qty + d.added * $1 FROM delivery d WHERE d.sku = stock.sku AND d.added > $2",
            parameters=[2, 15],
        )
        cur.execute("SELECT sku, qty FROM stock ORDER BY sku")
        assert cur.fetchall() == [("a", 1), ("b", 42), ("c", 63)]
        cur.execute("DELETE FROM stock USING delivery d WHERE d.sku = stock.sku AND d.added < $1", parameters=[25])
        cur.execute("SELECT sku FROM stock ORDER BY sku")
        assert cur.fetchall() == [("c",)]


def test_null_parameters_keep_the_prepared_types(server):
    """A NULL bound where the prepared plan has a type comes back in that type; a value that would change a
    column's prepared type is refused as invalid input (not an internal error), and the server stays up."""
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT $1::TEXT AS a, $2::BIGINT + 1 AS b", parameters=[None, None])
        table = cur.fetch_arrow_table()
        assert table.schema.field("a").type == pa.string()
        assert table.schema.field("b").type == pa.int64()
        assert table.to_pydict() == {"a": [None], "b": [None]}
        cur.execute("SELECT $1::TEXT AS a, $2::BIGINT + 1 AS b", parameters=["x", 41])
        assert cur.fetchall() == [("x", 42)]
        cur.execute("SELECT 1")
        assert cur.fetchall() == [(1,)]


def test_prepared_hybrid_search_with_bound_parameters(server):
    """`$n` in search table functions' arguments: the statement is prepared once (its parameter schema names the
    query text, k and the namespace) and executed with new values each time."""
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        marrow.Memory(conn).remember_many(
            [
                "Caroline went to the LGBTQ support group",
                "Melanie painted a sunrise over the lake",
                "Caroline is researching adoption agencies",
                "The weather was rainy all week",
            ],
            namespace="prep",
        )
        sql = (
            "SELECT content FROM hybrid_search('memories', 'content', 'embedding', $1, embed($1), $2)"
            " WHERE namespace = $3 ORDER BY _score DESC"
        )
        params = cur.adbc_prepare(sql)
        assert params is not None and params.names == ["$1", "$2", "$3"]
        assert [params.field(i).type for i in range(3)] == [pa.string(), pa.int64(), pa.string()]
        cur.execute(sql, parameters=["LGBTQ support", 1, "prep"])
        assert cur.fetchall() == [("Caroline went to the LGBTQ support group",)]
        cur.execute(sql, parameters=["sunrise painting", 2, "prep"])
        rows = cur.fetchall()
        assert len(rows) == 2 and rows[0] == ("Melanie painted a sunrise over the lake",)
        cur.execute(sql, parameters=["sunrise painting", 2, "nobody"])
        assert cur.fetchall() == []
        # Keyword and vector search take parameters the same way; a vector binds as a list of floats.
        cur.execute("SELECT content FROM fts_search('memories', 'content', $1, $2)", parameters=["rainy", 5])
        assert cur.fetchall() == [("The weather was rainy all week",)]
        ranked = "SELECT content FROM memories WHERE namespace = $2 ORDER BY bm25(content, $1) DESC LIMIT 1"
        cur.execute(ranked, parameters=["rainy", "prep"])
        assert cur.fetchall() == [("The weather was rainy all week",)]
        cur.execute(ranked, parameters=["adoption", "prep"])
        assert cur.fetchall() == [("Caroline is researching adoption agencies",)]
        vector = conn.scalar("SELECT embed('adoption agencies')")
        cur.execute(
            "SELECT content FROM vector_search('memories', 'embedding', $1, 1)",
            parameters=[pa.array([vector], pa.list_(pa.float32()))[0].as_py()],
        )
        assert cur.fetchall() == [("Caroline is researching adoption agencies",)]
        # Bad values are refused (when the rows are fetched: a prepared query runs then), the server stays up.
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute(sql, parameters=["   ", 1, "prep"])
            cur.fetchall()
        assert "query is empty" in str(e.value)
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute(sql, parameters=["x", 0, "prep"])
            cur.fetchall()
        assert "k must be positive" in str(e.value)
        cur.execute("SELECT 1")
        assert cur.fetchall() == [(1,)]


def test_ingest_modes(server):
    data = pa.table({"id": pa.array([1, 2], pa.int64()), "label": ["a", "b"]})
    more = pa.table({"id": pa.array([3], pa.int64()), "label": ["c"]})
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("ing", data, mode="create") == 2
        with pytest.raises(adbc_driver_manager.Error):
            cur.adbc_ingest("ing", data, mode="create")
        cur.adbc_ingest("ing", more, mode="append")
        cur.execute("SELECT id FROM ing ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == [1, 2, 3]
        cur.adbc_ingest("ing", more, mode="replace")
        cur.execute("SELECT id, label FROM ing")
        assert cur.fetchall() == [(3, "c")]
        cur.adbc_ingest("ing", data, mode="create_append")
        cur.adbc_ingest("ing2", data, mode="create_append")
        cur.execute("SELECT (SELECT count(*) FROM ing) AS a, (SELECT count(*) FROM ing2) AS b")
        assert cur.fetchone() == (3, 2)
        with pytest.raises(adbc_driver_manager.Error):
            cur.adbc_ingest("missing_table", data, mode="append")
        bad = pa.table({"id": ["not a number"], "label": ["x"]})
        with pytest.raises(adbc_driver_manager.Error):
            cur.adbc_ingest("ing", bad, mode="append")
        cur.execute("SELECT count(*) FROM ing")
        assert cur.fetchone() == (3,)


def test_metadata_calls(server):
    with marrow.connect(server.uri) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE meta_t (id BIGINT NOT NULL, note VARCHAR)")
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "marrow"
        objects = conn.adbc_get_objects(depth="all", catalog_filter="marrow").read_all().to_pylist()
        schemas = {s["db_schema_name"]: s for c in objects for s in c["catalog_db_schemas"]}
        tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
        assert {"memories", "meta_t"} <= set(tables)
        assert [c["column_name"] for c in tables["meta_t"]["table_columns"]] == ["id", "note"]
        schema = conn.adbc_get_table_schema("meta_t")
        assert schema.field("id").type == pa.int64() and not schema.field("id").nullable
        assert schema.field("note").type == pa.string()
        assert "TABLE" in " ".join(conn.adbc_get_table_types()).upper()


def test_set_belongs_to_the_session(auth_server):
    a = marrow.connect(auth_server.uri, "ada", "lovelace")
    b = marrow.connect(auth_server.uri, "ada", "lovelace")
    with a, b, a.cursor() as ca, b.cursor() as cb:
        ca.execute("SET datafusion.execution.batch_size = 1234")
        ca.execute("SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'")
        assert ca.fetchone() == ("1234",)
        cb.execute("SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'")
        assert cb.fetchone() != ("1234",)


def test_set_with_cookie_sessions_without_auth(server):
    opts = {"adbc.flight.sql.rpc.with_cookie_middleware": "true"}
    import adbc_driver_flightsql.dbapi as dbapi

    a = dbapi.connect(server.uri, db_kwargs=opts)
    b = dbapi.connect(server.uri, db_kwargs=opts)
    with a, b, a.cursor() as ca, b.cursor() as cb:
        ca.execute("SET datafusion.execution.batch_size = 777")
        ca.execute("SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'")
        assert ca.fetchone() == ("777",)
        cb.execute("SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'")
        assert cb.fetchone() != ("777",)


def test_a_plain_connection_is_one_session(server):
    """Without a login or the cookie option (ADBC's default), a connection still keeps its session: SET and
    prepared statements persist across its calls, and another connection does not see them."""
    import adbc_driver_flightsql.dbapi as dbapi

    show = "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'"
    a = dbapi.connect(server.uri)
    b = dbapi.connect(server.uri)
    with a, b, a.cursor() as ca, b.cursor() as cb:
        ca.execute("SET datafusion.execution.batch_size = 4321")
        for _ in range(3):
            ca.execute(show)
            assert ca.fetchone() == ("4321",)
        ca.execute("SELECT $1::BIGINT * 2 AS twice", parameters=(21,))
        assert ca.fetchone() == (42,)
        cb.execute(show)
        assert cb.fetchone() != ("4321",)
        cb.execute("SET datafusion.execution.batch_size = 99")
        ca.execute(show)
        assert ca.fetchone() == ("4321",)
    # A new connection starts a new session.
    with dbapi.connect(server.uri) as c, c.cursor() as cc:
        cc.execute(show)
        assert cc.fetchone() not in (("4321",), ("99",))


def test_auth_required(auth_server):
    with pytest.raises(adbc_driver_manager.Error) as e:
        with marrow.connect(auth_server.uri, "ada", "wrong") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "nauthenticated" in str(e.value) or "UNAUTHENTICATED" in str(e.value)
    with pytest.raises(adbc_driver_manager.Error):
        with marrow.connect(auth_server.uri) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    with marrow.connect(auth_server.uri, "ada", "lovelace") as conn, conn.cursor() as cur:
        cur.execute("SELECT 41 + 1 AS answer")
        assert cur.fetchone() == (42,)


def test_errors_keep_the_server_up(server):
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE e (id BIGINT PRIMARY KEY)")
        cur.execute("INSERT INTO e VALUES (1)")
        for bad, code in [
            ("SELEC 1", "INVALID_ARGUMENT"),
            ("SELECT * FROM no_such_table", "NOT_FOUND"),
            ("INSERT INTO e VALUES (1)", None),
            ("INSERT INTO memories (id, content, embedding) VALUES ('x', 'y', [1.0, 2.0])", "INVALID_ARGUMENT"),
        ]:
            with pytest.raises(adbc_driver_manager.Error) as e:
                cur.execute(bad)
                cur.fetchall()
            if code:
                assert code in str(e.value).upper().replace(" ", "_"), str(e.value)
        with pytest.raises(adbc_driver_manager.Error):
            cur.execute("SELECT $1 + $2", parameters=[1])
            cur.fetchall()
        cur.execute("SELECT count(*) FROM e")
        assert cur.fetchone() == (1,)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_raw_pyarrow_flight_client(server):
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE raw (x BIGINT)")
        cur.execute("INSERT INTO raw VALUES (1), (2), (3)")
    # google.protobuf.Any { type_url, value: CommandStatementQuery { query } }, encoded by hand.
    command = _field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + _field(
        2, _field(1, b"SELECT x * 10 AS y FROM raw ORDER BY x")
    )
    client = flight.FlightClient(f"grpc://127.0.0.1:{server.port}")
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
    assert info.schema.names == ["y"]
    tables = [client.do_get(ep.ticket).read_all() for ep in info.endpoints]
    assert pa.concat_tables(tables).column("y").to_pylist() == [10, 20, 30]
    # A forged ticket is a bad request (INVALID_ARGUMENT, which pyarrow raises as ArrowInvalid), not a crash.
    with pytest.raises(pa.ArrowInvalid):
        client.do_get(flight.Ticket(b"forged ticket")).read_all()
    # Tickets are single-use: a replay is NOT_FOUND (pyarrow's ArrowKeyError).
    with pytest.raises(pa.ArrowKeyError):
        client.do_get(info.endpoints[0].ticket).read_all()


def test_large_rows_stream_under_default_message_limit(server):
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE blobs (id BIGINT, body VARCHAR)")
        cur.execute("INSERT INTO blobs SELECT value, repeat('x', 3000000) FROM generate_series(1, 4)")
        cur.execute("SELECT id, body FROM blobs ORDER BY id")
        t = cur.fetch_arrow_table()
        assert t.num_rows == 4 and all(len(b) == 3000000 for b in t.column("body").to_pylist())


def test_tls(serve, tls_files):
    cert, key = tls_files
    s = serve(user="ada", password="lovelace", tls=(cert, key))
    with marrow.connect(s.uri, "ada", "lovelace", tls_root_certs=cert.read_text()) as conn, conn.cursor() as cur:
        cur.execute("SELECT 'secure' AS s")
        assert cur.fetchone() == ("secure",)
