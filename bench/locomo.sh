#!/usr/bin/env bash
# Issue 20's recall measurement on LoCoMo (release build): Marrow's recall modes beside bm25s, exact dense and
# LanceDB 0.40 hybrid on the same turns, in one run. Usage: bench/locomo.sh [EVAL_DIR] [MARROW_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
EVAL=${1:-../shared/eval/locomo-dev}
BIN=${2:-}
if [[ -z $BIN ]]; then
  cargo build --release -p marrow-flight --bin marrow
  BIN="$CARGO_TARGET_DIR/release/marrow"
fi
.venv/bin/pip install -q bm25s==0.3.16 lancedb==0.40.0
lscpu | grep 'Model name' || true
.venv/bin/python bench/locomo.py "$BIN" "$EVAL"
