#!/usr/bin/env bash
# Issue 21's measurements (release build): query adapters trained from feedback on LoCoMo (held-out recall before
# and after), consolidation of 10,000 memories, route() latency and round trips.
# Usage: bench/brain.sh [EVAL_DIR] [MARROW_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
EVAL=${1:-../shared/eval/locomo-dev}
BIN=${2:-}
if [[ -z $BIN ]]; then
  cargo build --release -p marrow-flight --bin marrow
  BIN="$CARGO_TARGET_DIR/release/marrow"
fi
lscpu | grep 'Model name' || true
.venv/bin/python bench/brain.py "$BIN" "$EVAL"
