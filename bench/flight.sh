#!/usr/bin/env bash
# Issue 3's Flight benchmarks in one run (release build). Reuses the 10M-row table of bench/scan.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
[ -d /tmp/marrow-scan-bench/numbers.lance ] || bench/scan.sh 10000000 1
cargo build --release -p marrow-engine --example scan_bench --example vector_bench --example embed_bench -p marrow-flight --bin marrow
.venv/bin/pip install -q pylance==14.0.2 lancedb==0.40.0 numpy
.venv/bin/python bench/flight.py "$CARGO_TARGET_DIR/release/marrow" /tmp/marrow-scan-bench
