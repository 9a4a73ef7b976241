#!/usr/bin/env bash
# Issue 19's measurements (release builds), BEFORE and AFTER side by side in one run: SELECT 1 latency while other
# clients plan a pathological statement, peak RSS of a 1.5 GB ingest under --memory-limit 256MiB, point-query latency.
# Usage: bench/hostile.sh BEFORE_BINARY [AFTER_BINARY]   (AFTER defaults to this checkout's release build)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
BEFORE=${1:?usage: bench/hostile.sh BEFORE_BINARY [AFTER_BINARY]}
AFTER=${2:-}
if [[ -z $AFTER ]]; then
  cargo build --release -p marrow-flight --bin marrow
  AFTER="$CARGO_TARGET_DIR/release/marrow"
fi
lscpu | grep 'Model name' || true
.venv/bin/python bench/hostile.py "$BEFORE" "$AFTER"
