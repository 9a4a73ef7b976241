"""Issue 6's measurements, side by side in one run on all-MiniLM-L6-v2 (release `marrow`):

- quantize/dequantize throughput (GB/s of f32) through SQL (`quantize(data, scheme)` over the `tensors` chunks,
  in-process in the server, timed through ADBC with `count(*)` so no blobs cross the wire), next to gguf-py 0.19's
  numpy reference on the same tensors and numpy's memcpy as the ceiling;
- RMSE and max error per scheme on MiniLM's F32 tensors (`dequantize(quantize(x))` vs x);
- import and export time of the 90 MB model (CLI, embedded).

Usage: .venv/bin/python bench/quant.py <release marrow> [REPS]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import gguf
import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python", "tests"))
import marrow  # noqa: E402
from conftest import Server, model_dir  # noqa: E402

MARROW = sys.argv[1]
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
GGML = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}


def best(fn) -> float:
    times = []
    for _ in range(REPS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    os.environ["MARROW_BIN"] = MARROW
    src = model_dir() / "model.safetensors"
    tensors = {k: v for k, v in load_file(str(src)).items() if v.dtype == np.float32}
    f32_bytes = sum(v.nbytes for v in tensors.values())
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "data")
        t = time.perf_counter()
        subprocess.run([MARROW, "import-weights", str(src), "--model", "minilm", "--data-dir", data], check=True,
                       capture_output=True)
        t_import = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run([MARROW, "export-weights", "minilm", "--out", os.path.join(d, "out.safetensors"),
                        "--data-dir", data], check=True, capture_output=True)
        t_export = time.perf_counter() - t
        print(f"## import / export of the {os.path.getsize(src) / 1e6:.1f} MB model (CLI, process start included)")
        print(f"import-weights {t_import:.2f} s, export-weights {t_export:.2f} s")

        server = Server(data)  # type: ignore[arg-type]
        try:
            with marrow.connect(server.uri) as conn, conn.cursor() as cur:
                where = "model = 'minilm' AND dtype = 'F32'"

                def run(sql: str) -> None:
                    cur.execute(sql)
                    cur.fetchall()

                base = best(lambda: run(f"SELECT count(*) FROM (SELECT data FROM tensors WHERE {where})"))
                print(f"\n## throughput on MiniLM's F32 tensors ({f32_bytes / 1e6:.1f} MB), best of {REPS}")
                print("SQL: the scan of the chunks alone is timed and subtracted; dequantize = (quantize+dequantize) - quantize")
                print(f"{'scheme':<6} {'SQL quantize':>13} {'SQL dequant':>12} {'gguf-py q':>10} {'gguf-py dq':>11}"
                      f"   GB/s of f32")
                two_d = sum(v.nbytes for v in tensors.values() if v.ndim == 2)
                for scheme in ["q8_0", "q4_0", "q4_k", "q2_k", "nf4", "int8"]:
                    # K-quants need 256-value blocks: MiniLM's 1-D tensors (384 values) are left out for them.
                    kq = scheme in ("q4_k", "q2_k")
                    where = "model = 'minilm' AND dtype = 'F32'" + (" AND array_length(shape) = 2" if kq else "")
                    nbytes = two_d if kq else f32_bytes
                    base = best(lambda: run(f"SELECT count(*) FROM (SELECT data FROM tensors WHERE {where})"))
                    q = best(lambda: run(
                        f"SELECT count(quantize(data, '{scheme}')) FROM tensors WHERE {where}"))
                    dq = best(lambda: run(
                        f"SELECT count(dequantize(quantize(data, '{scheme}'), '{scheme}')) FROM tensors WHERE {where}"))
                    sql_q = nbytes / max(q - base, 1e-9) / 1e9
                    # Below the timing noise the difference says nothing: print nan.
                    sql_dq = nbytes / (dq - q) / 1e9 if dq - q > 0.05 * q else float("nan")
                    ref_q = ref_dq = float("nan")
                    if scheme in GGML:
                        qt = GGML[scheme]
                        blobs = {}
                        tq = best(lambda: blobs.update({k: gguf.quants.quantize(v, qt) for k, v in tensors.items()}))
                        tdq = best(lambda: [gguf.quants.dequantize(b, qt) for b in blobs.values()])
                        ref_q, ref_dq = f32_bytes / tq / 1e9, f32_bytes / tdq / 1e9
                    print(f"{scheme:<6} {sql_q:>13.2f} {sql_dq:>12.2f} {ref_q:>10.2f} {ref_dq:>11.2f}")
                buf = np.concatenate([v.ravel() for v in tensors.values()])
                t_copy = best(lambda: buf.copy())
                print(f"memcpy (numpy copy) ceiling: {f32_bytes / t_copy / 1e9:.2f} GB/s")

                print("\n## error per scheme on MiniLM's F32 tensors (every value; int8 scales per 4 MiB chunk)")
                for scheme in ["q8_0", "q4_0", "q4_k", "q2_k", "nf4", "int8"]:
                    where = "model = 'minilm' AND dtype = 'F32'" + (
                        " AND array_length(shape) = 2" if scheme in ("q4_k", "q2_k") else "")
                    cur.execute(f"SELECT name, chunk, dequantize(quantize(data, '{scheme}'), '{scheme}') AS v "
                                f"FROM tensors WHERE {where} ORDER BY name, chunk")
                    got = cur.fetch_arrow_table()
                    sq = mx = 0.0
                    n = 0
                    by_name: dict[str, list[np.ndarray]] = {}
                    for name, col in zip(got.column("name").to_pylist(), got.column("v").chunks and
                                         [x for c in got.column("v").chunks for x in c]):
                        by_name.setdefault(name, []).append(col.values.to_numpy())
                    for name, parts in by_name.items():
                        err = np.concatenate(parts).astype(np.float64) - tensors[name].ravel().astype(np.float64)
                        sq += float(err @ err)
                        mx = max(mx, float(np.abs(err).max()))
                        n += err.size
                    print(f"{scheme:<6} RMSE {np.sqrt(sq / n):.3e}  max |error| {mx:.3e}  over {n} values")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
