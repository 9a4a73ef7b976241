"""Issue 6's measurements, side by side in one run on all-MiniLM-L6-v2 (release `marrow`):

- quantize/dequantize throughput (GB/s of f32) of Marrow's raw kernels and of SQL (`quantize(data, scheme)` over
  the `tensors` chunks, in-process: engine/examples/quant_bench.rs, built beside the binary), next to gguf-py 0.19's
  numpy reference on the same tensors and memcpy as the ceiling;
- RMSE and max error per scheme on MiniLM's F32 tensors (`dequantize(quantize(x))` vs x);
- import and export time of the 90 MB model (CLI, embedded).

Usage: .venv/bin/python bench/quant.py <release marrow> [REPS]
"""

from __future__ import annotations

import json
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
                print(f"\n## throughput on MiniLM's F32 tensors ({f32_bytes / 1e6:.1f} MB), GB/s of f32, best of {REPS}")
                print("raw = Marrow's kernels on one thread; SQL = quantize()/dequantize() over the tensors rows,")
                print("in-process (scan = the same query without the function); gguf-py = gguf.quants (numpy)")
                # The kernels and the in-process SQL path, from the Rust example built beside the binary.
                example = os.path.join(os.path.dirname(MARROW), "examples", "quant_bench")
                rust = {}
                out = subprocess.run([example, str(src), str(REPS)], check=True, capture_output=True, text=True)
                for line in out.stdout.splitlines():
                    row = json.loads(line)
                    rust[row["scheme"]] = row
                print(f"{'scheme':<6} {'raw q':>7} {'raw dq':>7} {'SQL q':>7} {'SQL dq':>7} {'scan':>6} "
                      f"{'gguf-py q':>10} {'gguf-py dq':>11} {'raw q / gguf-py':>16} {'memcpy':>7}")
                for scheme in ["q8_0", "q4_0", "q4_k", "q2_k", "nf4", "int8"]:
                    r = rust[scheme]
                    ref_q = ref_dq = float("nan")
                    if scheme in GGML:
                        qt = GGML[scheme]
                        blobs = {}
                        tq = best(lambda: blobs.update({k: gguf.quants.quantize(v, qt) for k, v in tensors.items()}))
                        tdq = best(lambda: [gguf.quants.dequantize(b, qt) for b in blobs.values()])
                        ref_q, ref_dq = f32_bytes / tq / 1e9, f32_bytes / tdq / 1e9
                    print(f"{scheme:<6} {r['raw_quantize']:>7.2f} {r['raw_dequantize']:>7.2f} "
                          f"{r['sql_quantize']:>7.2f} {r['sql_dequantize']:>7.2f} {r['scan']:>6.2f} "
                          f"{ref_q:>10.2f} {ref_dq:>11.2f} {r['raw_quantize'] / ref_q:>16.1f} {r['memcpy']:>7.2f}")
                buf = np.concatenate([v.ravel() for v in tensors.values()])
                t_copy = best(lambda: buf.copy())
                print(f"numpy copy of the same bytes: {f32_bytes / t_copy / 1e9:.2f} GB/s")

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
