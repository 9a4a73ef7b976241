"""Vector search over Flight SQL: a filtered top-k with the query vector bound as a parameter, through the index and
exactly, checked against numpy."""

from __future__ import annotations

import adbc_driver_manager
import numpy as np
import pyarrow as pa
import pytest

import marrow

DIM = 16


def _vectors(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, DIM)).astype(np.float32)


def _exact_top_k(vectors: np.ndarray, cats: np.ndarray, q: np.ndarray, cat: int, k: int) -> list[int]:
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(q)
    dist = 1.0 - (vectors @ q) / norms
    dist[cats != cat] = np.inf
    return [int(i) for i in np.argsort(dist, kind="stable")[:k]]


def test_filtered_top_k_with_bound_parameter(server):
    n = 2000
    vectors = _vectors(n)
    cats = np.arange(n) % 5
    table = pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "cat": pa.array(cats, pa.int32()),
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        }
    )
    query = _vectors(1, seed=99)[0]
    sql = (
        "SELECT id, cat, cosine_distance(emb, $1) AS d FROM items WHERE cat = $2 ORDER BY d LIMIT 10"
    )
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.adbc_ingest("items", table, mode="create")

        def run() -> tuple[list[int], list[float]]:
            cur.execute(sql, parameters=[query.tolist(), 3])
            got = cur.fetch_arrow_table()
            assert set(got.column("cat").to_pylist()) == {3}
            return got.column("id").to_pylist(), got.column("d").to_pylist()

        expected = _exact_top_k(vectors, cats, query, 3, 10)
        exact_ids, exact_d = run()
        assert exact_ids == expected
        # Distances are exact (f64 over f32 inputs): compare with numpy's to float32 precision.
        q = query.astype(np.float64)
        ref = [1.0 - float(vectors[i].astype(np.float64) @ q) / (np.linalg.norm(vectors[i].astype(np.float64)) * np.linalg.norm(q)) for i in expected]
        np.testing.assert_allclose(exact_d, ref, rtol=1e-6, atol=1e-7)

        cur.execute(
            "CREATE INDEX items_emb ON items USING IVF_FLAT (emb) WITH (metric = 'cosine', num_partitions = 4)"
        )
        cur.execute("SET marrow.nprobes = 4")
        cur.execute("EXPLAIN " + sql.replace("$1", "[" + ",".join(map(str, query.tolist())) + "]").replace("$2", "3"))
        plan = "\n".join(cur.fetch_arrow_table().column("plan").to_pylist())
        assert "VectorSearchExec: mode=ann, index=items_emb" in plan
        ann_ids, ann_d = run()
        # IVF_FLAT probing every partition is exact, so the index path must agree with the exact path.
        assert ann_ids == exact_ids
        np.testing.assert_allclose(ann_d, exact_d, rtol=0, atol=0)

        # Without a WHERE clause the query takes the direct path (no Lance scanner): still exact at full probes,
        # and deleted rows stay out.
        unfiltered = "SELECT id FROM items ORDER BY cosine_distance(emb, $1) LIMIT 10"
        literal = "[" + ",".join(map(str, query.tolist())) + "]"
        cur.execute("EXPLAIN " + unfiltered.replace("$1", literal))
        plan = "\n".join(cur.fetch_arrow_table().column("plan").to_pylist())
        assert "search=direct" in plan and "DirectAnnExec: index=items_emb" in plan, plan
        everyone = _exact_top_k(vectors, np.zeros(n, dtype=int), query, 0, 11)
        cur.execute(unfiltered, parameters=[query.tolist()])
        assert cur.fetch_arrow_table().column("id").to_pylist() == everyone[:10]
        cur.execute(f"DELETE FROM items WHERE id = {everyone[0]}")
        cur.execute(unfiltered, parameters=[query.tolist()])
        assert cur.fetch_arrow_table().column("id").to_pylist() == everyone[1:11]
        gone = everyone[0]
        restored = "[" + ",".join(map(str, vectors[gone].tolist())) + "]"
        cur.execute(f"INSERT INTO items VALUES ({gone}, {int(cats[gone])}, {restored})")

        # The table function form, post-filtered by WHERE.
        cur.execute(
            "SELECT id FROM vector_search('items', 'emb', "
            + "[" + ",".join(map(str, query.tolist())) + "]"
            + ", 10) ORDER BY _distance"
        )
        assert cur.fetch_arrow_table().column("id").to_pylist() == _exact_top_k(
            vectors, np.zeros(n, dtype=int), query, 0, 10
        )


def test_bad_vector_queries_are_invalid_argument(server):
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE v (id BIGINT, emb FLOAT[4])")
        cur.execute("INSERT INTO v VALUES (1, [1, 0, 0, 0]), (2, [0, 1, 0, 0])")
        for sql, params, message in [
            ("SELECT id FROM v ORDER BY cosine_distance(emb, $1) LIMIT 1", [[1.0, 2.0]], "query vector has 2 dimensions"),
            ("SELECT id FROM v ORDER BY l2_distance(emb, $1) LIMIT 1", [[1.0, float("nan"), 0.0, 0.0]], "NaN"),
            ("SELECT * FROM vector_search('v', 'emb', [1, 0, 0, 0], -1)", None, "k must be positive"),
            ("CREATE INDEX v_id ON v USING IVF_PQ (id)", None, "not a vector"),
        ]:
            with pytest.raises(adbc_driver_manager.Error) as e:
                cur.execute(sql, parameters=params)
                cur.fetch_arrow_table()
            assert message in str(e.value), str(e.value)
            assert "INVALID_ARGUMENT" in str(e.value).upper().replace(" ", "_"), str(e.value)
        cur.execute("SELECT count(*) FROM v")
        assert cur.fetchone() == (2,)


def test_prepared_top_k_answers_every_new_vector(server):
    # The same statement run with new vectors reuses its plan on the server (the plan cache); every answer must still
    # be the one for its own vector, and a bad vector in between fails without disturbing the next.
    n = 1500
    vectors = _vectors(n, seed=3)
    table = pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        }
    )
    sql = "SELECT id, cosine_distance(emb, $1) AS d FROM pts ORDER BY d LIMIT 5"
    everyone = np.zeros(n, dtype=int)
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.adbc_ingest("pts", table, mode="create")
        cur.execute(
            "CREATE INDEX pts_emb ON pts USING IVF_FLAT (emb) WITH (metric = 'cosine', num_partitions = 3)"
        )
        # Every partition probed: IVF_FLAT is exact, so numpy's answer is the expected one.
        cur.execute("SET marrow.nprobes = 3")
        for i, q in enumerate(_vectors(12, seed=1234)):
            if i == 6:
                with pytest.raises(adbc_driver_manager.Error) as e:
                    cur.execute(sql, parameters=[q[:3].tolist()])
                    cur.fetch_arrow_table()
                assert "query vector has 3 dimensions" in str(e.value), str(e.value)
            cur.execute(sql, parameters=[q.tolist()])
            got = cur.fetch_arrow_table()
            assert got.column("id").to_pylist() == _exact_top_k(vectors, everyone, q, 0, 5), i
