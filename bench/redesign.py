"""Issue 18's measurement: the redesign must not cost the hot paths. Two `marrow` release binaries (before and after)
serve the same data directory in turn, in one run, and answer through ADBC (prepared statements, bound $1):

1. ANN top-10 over Flight: GloVe-6B-50d (400k vectors, 1,000 held-out queries with exact truth), IVF_HNSW_SQ index,
   cosine, nprobes 8 / ef 100: queries per second, p50/p95 latency and recall@10.
2. Point query: `SELECT * FROM glove WHERE id = $1` (no index on id), p50/p95.

The binaries alternate for ROUNDS rounds; each figure is the best round's. Usage:
  bench/redesign.sh BEFORE_BINARY AFTER_BINARY
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import marrow
import numpy as np
from _server import start, stop

K = 10
ROUNDS = 3


def measure(binary: str, data: Path, queries: np.ndarray, truth: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    proc, uri = start(binary, data)
    try:
        with marrow.connect(uri) as conn:
            cur = conn.cursor()
            cur.execute("SET marrow.nprobes = 8")
            cur.execute("SET marrow.ef = 100")
            sql = "SELECT id FROM glove ORDER BY cosine_distance(emb, $1) LIMIT 10"
            for q in queries[:50]:  # warm the index and the plan cache
                cur.execute(sql, parameters=[q.tolist()])
                cur.fetch_arrow_table()
            lat, hits = [], 0
            t0 = time.perf_counter()
            for q, t in zip(queries, truth):
                s = time.perf_counter()
                cur.execute(sql, parameters=[q.tolist()])
                got = cur.fetch_arrow_table().column(0).to_pylist()
                lat.append(time.perf_counter() - s)
                hits += len(set(got) & set(t.tolist()))
            total = time.perf_counter() - t0
            point = []
            rng = np.random.default_rng(1)
            for key in rng.choice(ids, 220):
                s = time.perf_counter()
                cur.execute("SELECT * FROM glove WHERE id = $1", parameters=[int(key)])
                assert len(cur.fetchall()) == 1
                point.append(time.perf_counter() - s)
            point = point[20:]
    finally:
        stop(proc)
    ms = np.array(lat) * 1000
    pms = np.array(point) * 1000
    return {
        "ann q/s": len(queries) / total,
        "ann p50 ms": float(np.percentile(ms, 50)),
        "ann p95 ms": float(np.percentile(ms, 95)),
        "recall@10": hits / truth.size,
        "point p50 ms": float(np.percentile(pms, 50)),
        "point p95 ms": float(np.percentile(pms, 95)),
    }


def main() -> None:
    before, after, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    data = root / "data"
    queries = np.fromfile(data / "queries.f32", dtype=np.float32)
    truth = np.fromfile(data / "truth.i64", dtype=np.int64).reshape(-1, K)
    queries = queries.reshape(len(truth), -1)
    ids = np.load(root / "base_ids.npy")
    best: dict[str, dict[str, float]] = {"before": {}, "after": {}}
    for r in range(ROUNDS):
        for name, binary in (("before", before), ("after", after)):
            m = measure(binary, data, queries, truth, ids)
            print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()), flush=True)
            for k, v in m.items():
                higher_better = k in ("ann q/s", "recall@10")
                old = best[name].get(k)
                if old is None or (v > old if higher_better else v < old):
                    best[name][k] = v
    print(f"\n{'measurement':<16} {'before':>10} {'after':>10} {'after/before':>13}")
    for k in best["after"]:
        b, a = best["before"][k], best["after"][k]
        print(f"{k:<16} {b:>10.3f} {a:>10.3f} {a / b:>13.3f}")


if __name__ == "__main__":
    main()
