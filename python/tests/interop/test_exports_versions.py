"""Exports read back by the analysts' tools (pyarrow, Polars, pandas, DuckDB), the data directory opened by pylance
and LanceDB (both ways), and table versions through Flight SQL."""

from __future__ import annotations

import json
import os

import adbc_driver_manager
import duckdb
import lance
import lancedb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

import marrow

DIM = 8
N = 500


def _data() -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((N, DIM)).astype(np.float32)
    # Values whose shortest decimal spelling is long, and extremes: the text formats must still round-trip.
    emb[0] = [0.1, 1 / 3, -2.5e-38, 3.4e38, 1e-45, -0.0, 7.0, 123456.78]
    table = pa.table(
        {
            "id": pa.array(np.arange(N), pa.int64()),
            "ns": pa.array(["alice" if i % 3 else "bob" for i in range(N)]),
            "content": pa.array([f"memory {i}, with \"quotes\"" for i in range(N)]),
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), DIM),
        }
    )
    return table, emb


def _load(cur) -> np.ndarray:
    table, emb = _data()
    cur.execute(f"CREATE TABLE mem (id BIGINT PRIMARY KEY, ns TEXT, content TEXT, emb VECTOR({DIM}))")
    cur.adbc_ingest("mem", table, mode="append")
    return emb


def _count(cur, sql: str) -> int:
    cur.execute(sql)
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def test_exports_read_back_exactly(export_server):
    server, export = export_server, export_server.export_root
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        emb = _load(cur)
        assert _count(cur, "COPY (SELECT * FROM mem ORDER BY id) TO 'mem.parquet'") == N
        assert _count(cur, "COPY (SELECT * FROM mem ORDER BY id) TO 'mem.arrow'") == N
        assert _count(cur, "COPY (SELECT * FROM mem ORDER BY id) TO 'mem.csv'") == N
        assert _count(cur, "COPY (SELECT * FROM mem ORDER BY id) TO 'mem.json'") == N
        assert _count(cur, "COPY (SELECT * FROM mem) TO 'by_ns' STORED AS PARQUET PARTITIONED BY (ns)") == N

    # Parquet: a fixed-size list column, bit-identical.
    t = pq.read_table(export / "mem.parquet")
    assert t.schema.field("emb").type == pa.list_(pa.float32(), DIM)
    np.testing.assert_array_equal(np.stack(t.column("emb").to_numpy(zero_copy_only=False)), emb)
    assert t.column("content").to_pylist()[1] == 'memory 1, with "quotes"'

    df = pl.read_parquet(export / "mem.parquet")
    assert df.schema["emb"] == pl.Array(pl.Float32, DIM)
    np.testing.assert_array_equal(df["emb"].to_numpy(), emb)

    pdf = pd.read_parquet(export / "mem.parquet")
    np.testing.assert_array_equal(np.stack(pdf["emb"].to_numpy()), emb)
    assert list(pdf["id"]) == list(range(N))

    # DuckDB reads the list and casts it to a fixed-size ARRAY, usable with its array functions.
    con = duckdb.connect()
    path = str(export / "mem.parquet")
    got = con.execute(f"SELECT emb::FLOAT[{DIM}] AS v FROM read_parquet('{path}') ORDER BY id").fetchnumpy()["v"]
    np.testing.assert_array_equal(np.stack(got), emb)
    assert con.execute(f"SELECT typeof(emb::FLOAT[{DIM}]) FROM read_parquet('{path}') LIMIT 1").fetchone() == (
        f"FLOAT[{DIM}]",
    )
    sim = con.execute(
        f"SELECT array_cosine_similarity(emb::FLOAT[{DIM}], emb::FLOAT[{DIM}]) FROM read_parquet('{path}') "
        "WHERE id = 7"
    ).fetchone()
    assert sim is not None and abs(sim[0] - 1.0) < 1e-6

    # Arrow IPC file (LZ4): pyarrow and Polars.
    with ipc.open_file(export / "mem.arrow") as f:
        at = f.read_all()
    assert at.schema.field("emb").type == pa.list_(pa.float32(), DIM)
    np.testing.assert_array_equal(np.stack(at.column("emb").to_numpy(zero_copy_only=False)), emb)
    np.testing.assert_array_equal(pl.read_ipc(export / "mem.arrow")["emb"].to_numpy(), emb)

    # CSV: vectors are JSON arrays that parse back to the same float32 values.
    cdf = pd.read_csv(export / "mem.csv")
    parsed = np.array([json.loads(s) for s in cdf["emb"]], dtype=np.float32)
    np.testing.assert_array_equal(parsed, emb)
    assert cdf["content"][1] == 'memory 1, with "quotes"'

    # JSON lines.
    jdf = pl.read_ndjson(export / "mem.json")
    np.testing.assert_array_equal(np.array(jdf["emb"].to_list(), dtype=np.float32), emb)

    # Partitioned: a hive-style directory.
    ds = pads.dataset(export / "by_ns", format="parquet", partitioning="hive")
    counts = ds.to_table().group_by("ns").aggregate([("id", "count")]).to_pydict()
    assert dict(zip(counts["ns"], counts["id_count"])) == {"alice": N - (N + 2) // 3, "bob": (N + 2) // 3}

    # Nothing but the finished outputs is left in the export root.
    assert sorted(os.listdir(export)) == ["by_ns", "mem.arrow", "mem.csv", "mem.json", "mem.parquet"]


def test_bad_exports_change_nothing(export_server):
    server, export = export_server, export_server.export_root
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        _load(cur)
        cases = [
            ("COPY (SELECT * FROM mem) TO '../outside.parquet'", adbc_driver_manager.ProgrammingError, "outside"),
            ("COPY (SELECT * FROM mem) TO '/etc/marrow.parquet'", adbc_driver_manager.ProgrammingError, "outside"),
            ("COPY (SELECT * FROM mem) TO 'x.xlsx'", adbc_driver_manager.ProgrammingError, "unknown format"),
            ("COPY (SELECT CAST(content AS BIGINT) FROM mem) TO 'bad.csv'", adbc_driver_manager.Error, "Cast"),
        ]
        for sql, exc, needle in cases:
            with pytest.raises(exc) as err:
                cur.execute(sql)
                cur.fetchall()
            assert needle in str(err.value), (sql, str(err.value))
        assert _count(cur, "SELECT count(*) FROM mem") == N
    assert os.listdir(export) == []
    assert server.alive()


def test_versions_through_flight(server):
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        _load(cur)  # version 1: create, 2: the ingest
        cur.execute("UPDATE mem SET content = 'changed' WHERE id < 10")
        cur.fetchall()
        cur.execute("DELETE FROM mem WHERE ns = 'bob'")
        cur.fetchall()

        cur.execute("SELECT version, operation, rows FROM marrow_versions('mem') ORDER BY version")
        versions = cur.fetch_arrow_table().to_pylist()
        assert [v["operation"] for v in versions] == ["Overwrite", "Append", "Update", "Delete"]
        assert [v["rows"] for v in versions] == [0, N, N, N - (N + 2) // 3]

        assert _count(cur, "SELECT count(*) FROM mem VERSION AS OF 2") == N
        cur.execute("SELECT content FROM mem VERSION AS OF 2 WHERE id = 3")
        assert cur.fetchone() == ("memory 3, with \"quotes\"",)
        # A bound parameter next to a pinned version.
        cur.execute("SELECT content FROM mem VERSION AS OF 3 WHERE id = $1", parameters=[3])
        assert cur.fetchone() == ("changed",)

        cur.execute("CALL tag_version('mem', 'before_delete', 3)")
        assert cur.fetch_arrow_table().to_pylist() == [{"table_name": "mem", "tag": "before_delete", "version": 3}]
        cur.execute("CALL restore_table('mem', 'before_delete')")
        assert cur.fetch_arrow_table().to_pylist() == [
            {"table_name": "mem", "restored_version": 3, "new_version": 5}
        ]
        assert _count(cur, "SELECT count(*) FROM mem") == N

        with pytest.raises(adbc_driver_manager.ProgrammingError) as err:
            cur.execute("SELECT * FROM mem VERSION AS OF 99")
            cur.fetchall()
        assert "has no version 99" in str(err.value)
        assert "NOT_FOUND" in str(err.value) or "NotFound" in str(err.value) or "not found" in str(err.value)

        cur.execute("SET marrow.version_retention = '0 seconds'")
        cur.execute("CALL cleanup_versions('mem')")
        row = cur.fetch_arrow_table().to_pylist()[0]
        assert row["versions_removed"] == 3  # 1, 2 and 4; 3 is tagged and 5 is the latest
        cur.execute("SELECT version, tags FROM marrow_versions('mem') ORDER BY version")
        assert cur.fetch_arrow_table().to_pylist() == [
            {"version": 3, "tags": "before_delete"},
            {"version": 5, "tags": None},
        ]
    assert server.alive()


def test_data_directory_is_lance_for_pylance_and_lancedb(server):
    s, data = server, server.data_dir
    with marrow.connect(s.uri) as conn, conn.cursor() as cur:
        emb = _load(cur)
    # Marrow's table, opened by pylance and by LanceDB while the server runs.
    ds = lance.dataset(str(data / "mem.lance"))
    assert ds.count_rows() == N
    t = ds.to_table().sort_by("id")
    np.testing.assert_array_equal(np.stack(t.column("emb").to_numpy(zero_copy_only=False)), emb)
    db = lancedb.connect(str(data))
    assert {"mem", "memories"} <= set(db.list_tables().tables)
    lt = db.open_table("mem")
    assert lt.count_rows() == N
    hits = lt.search(emb[42].tolist()).metric("cosine").limit(1).to_arrow()
    assert hits.column("id").to_pylist() == [42]

    # A table LanceDB writes into the data directory is a Marrow table.
    rng = np.random.default_rng(5)
    notes_emb = rng.standard_normal((50, DIM)).astype(np.float32)
    db.create_table(
        "ldb_notes",
        pa.table(
            {
                "id": pa.array(np.arange(50), pa.int64()),
                "text": pa.array([f"note {i}" for i in range(50)]),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(notes_emb.ravel()), DIM),
            }
        ),
    )
    with marrow.connect(s.uri) as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        names = {r[2] for r in cur.fetchall()}
        assert "ldb_notes" in names
        assert _count(cur, "SELECT count(*) FROM ldb_notes") == 50
        cur.execute(
            "SELECT id FROM ldb_notes ORDER BY cosine_distance(vector, $1) LIMIT 1",
            parameters=[notes_emb[17].tolist()],
        )
        assert cur.fetchone() == (17,)
        cur.execute("INSERT INTO ldb_notes VALUES (50, 'from marrow', $1)", parameters=[notes_emb[0].tolist()])
        cur.fetchall()
    # ... and LanceDB sees Marrow's write.
    assert db.open_table("ldb_notes").count_rows() == 51
