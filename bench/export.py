"""Issue 7's export benchmark: a memories table (id, namespace, content, 384-d float32 embedding, importance) to
Parquet, side by side in one run on the same data:

- Marrow `COPY (SELECT * FROM bench_memories) TO '…parquet'` through Flight SQL (ADBC), with DataFusion's default
  Parquet compression (zstd level 3) and with snappy (the baselines' default);
- Marrow's CLI, `marrow export bench_memories --out …parquet` (embedded, process start included);
- DuckDB `COPY (SELECT * FROM read_parquet('input.parquet')) TO '…' (FORMAT parquet)`, reading the same rows from a
  Parquet file;
- pylance `to_table()` of the same Lance dataset + `pyarrow.parquet.write_table`.

Usage: bench/export.sh [ROWS] [REPS]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import duckdb
import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python", "tests"))
import marrow  # noqa: E402
from conftest import Server  # noqa: E402

MARROW = sys.argv[1]
ROOT = sys.argv[2]
ROWS = int(sys.argv[3])
REPS = int(sys.argv[4])
DIM = 384


def best(fn) -> float:
    times = []
    for _ in range(REPS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    os.environ["MARROW_BIN"] = MARROW
    data = os.path.join(ROOT, "data")
    out = os.path.join(ROOT, "out")
    source_parquet = os.path.join(ROOT, "input.parquet")
    lance_path = os.path.join(data, "bench_memories.lance")
    if not os.path.exists(lance_path) or lance.dataset(lance_path).count_rows() != ROWS:
        shutil.rmtree(ROOT, ignore_errors=True)
        os.makedirs(data)
        rng = np.random.default_rng(7)
        emb = rng.standard_normal((ROWS, DIM), dtype=np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        table = pa.table({
            "id": pa.array([f"m{i}" for i in range(ROWS)]),
            "namespace": pa.array([f"user{i % 100}" for i in range(ROWS)]),
            "content": pa.array([f"memory number {i} about topic {i % 1000}" for i in range(ROWS)]),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), DIM),
            "importance": pa.array(rng.random(ROWS, dtype=np.float32)),
        })
        lance.write_dataset(table, lance_path, max_rows_per_file=1 << 20)
        pq.write_table(table, source_parquet)
        del table, emb
    os.makedirs(out, exist_ok=True)
    nbytes = lance.dataset(lance_path).to_table(columns=["embedding"]).nbytes
    results: list[tuple[str, float]] = []

    server = Server(os.path.join(ROOT, "data"), extra=["--export-root", out])  # type: ignore[arg-type]
    try:
        with marrow.connect(server.uri) as conn, conn.cursor() as cur:
            def copy(options: str) -> None:
                cur.execute(f"COPY (SELECT * FROM bench_memories) TO 'marrow.parquet' {options}")
                assert cur.fetchone()[0] == ROWS

            results.append(("Marrow COPY over Flight, zstd(3) (default)", best(lambda: copy(""))))
            results.append(("Marrow COPY over Flight, snappy",
                            best(lambda: copy("OPTIONS ('format.compression' 'snappy')"))))
    finally:
        server.stop()

    cli_out = os.path.join(out, "cli.parquet")
    results.append(("Marrow CLI `marrow export` (zstd(3), process start included)", best(lambda: subprocess.run(
        [MARROW, "export", "bench_memories", "--out", cli_out, "--data-dir", data],
        check=True, capture_output=True))))
    assert pq.read_metadata(cli_out).num_rows == ROWS

    con = duckdb.connect()
    duck_out = os.path.join(out, "duckdb.parquet")
    results.append(("DuckDB COPY from Parquet (snappy)", best(lambda: con.execute(
        f"COPY (SELECT * FROM read_parquet('{source_parquet}')) TO '{duck_out}' (FORMAT parquet)"))))
    assert pq.read_metadata(duck_out).num_rows == ROWS

    py_out = os.path.join(out, "pylance.parquet")
    results.append(("pylance to_table + pyarrow write_table (snappy)", best(lambda: pq.write_table(
        lance.dataset(lance_path).to_table(), py_out))))

    print(f"\n## Export of {ROWS} memories ({DIM}-d float32 embeddings, {nbytes / 1e6:.0f} MB of vectors) to Parquet,"
          f" best of {REPS}")
    print(f"{'path':<64} {'s':>7} {'rows/s':>11}")
    base = results[0][1]
    for name, t in results:
        print(f"{name:<64} {t:>7.2f} {ROWS / t:>11.0f}   Marrow COPY (default) / this: {t / base:.2f}x time")
    for name, t in results[3:]:
        print(f"ratio Marrow COPY rows/s / {name}: {t / base:.2f} (default), {t / results[1][1]:.2f} (snappy)")


if __name__ == "__main__":
    main()
