#!/usr/bin/env bash
# Issue 2's scan benchmark, side by side in one run: Marrow in-process, DataFusion MemTable, pylance to_table.
# Usage: bench/scan.sh [ROWS] [REPS]   (release build; writes the dataset under /tmp/marrow-scan-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ROWS=${1:-10000000}; REPS=${2:-5}
DIR=/tmp/marrow-scan-bench
cargo build --release -p marrow-engine --example scan_bench --example vector_bench --example embed_bench -p marrow-flight --bin marrow
"$CARGO_TARGET_DIR/release/examples/scan_bench" "$DIR" "$ROWS" "$REPS"
.venv/bin/pip install -q pylance==14.0.2
.venv/bin/python - "$DIR/numbers.lance" "$REPS" <<'PY'
import sys, time, lance
ds = lance.dataset(sys.argv[1]); reps = int(sys.argv[2])
for name, flt in [("SELECT *", None), ("filtered (b < 100, ~1%)", "b < 100")]:
    best = min((lambda t0: (ds.to_table(filter=flt).num_rows, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(reps))
    print(f"pylance  {name:<31} {best*1000:>9.1f} ms  (best of {reps})")
PY
