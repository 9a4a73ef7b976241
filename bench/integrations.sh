#!/usr/bin/env bash
# Issue 24's measurement (release build): recall latency through the MCP server and the LangChain store next to
# marrow.Memory directly, on the same rows. Usage: bench/integrations.sh [MARROW_BINARY] [--rows N] [--queries N]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
BIN=${1:-}
shift || true
if [[ -z $BIN ]]; then
  cargo build --release -p marrow-flight --bin marrow
  BIN="$CARGO_TARGET_DIR/release/marrow"
fi
lscpu | grep 'Model name' || true
LANCE_LOG=error .venv/bin/python bench/integrations.py "$BIN" "$@"
