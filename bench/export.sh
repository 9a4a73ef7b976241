#!/usr/bin/env bash
# Issue 7's export benchmark, side by side in one run: 1M memories with 384-d embeddings to Parquet.
# Usage: bench/export.sh [ROWS] [REPS]   (release build; data under /tmp/marrow-export-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build --release -p marrow-engine --example scan_bench --example vector_bench --example embed_bench -p marrow-flight --bin marrow
.venv/bin/pip install -q pylance==14.0.2 duckdb==2.0.0
LANCE_LOG=error .venv/bin/python bench/export.py "$CARGO_TARGET_DIR/release/marrow" /tmp/marrow-export-bench "${1:-1000000}" "${2:-3}"
