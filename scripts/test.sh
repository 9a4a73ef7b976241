#!/usr/bin/env bash
# Set up and run every test: Rust unit and integration tests (sqllogictest over sql/, engine, Flight server), then
# the Python suite against the real `marrow` binary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
cargo build -p marrow-flight --bin marrow
cargo test --workspace 2>&1 | tee /tmp/marrow-cargo-test.log | grep -E "^(test result|running|error|failures|---- |thread)" || true
status=${PIPESTATUS[0]}
if [ "$status" != 0 ]; then
  tail -n 80 /tmp/marrow-cargo-test.log
  exit "$status"
fi
FLIGHT_SQL_CLIENT="$HOME/.cache/marrow-tools/bin/flight_sql_client" MARROW_BIN="$CARGO_TARGET_DIR/debug/marrow" .venv/bin/python -m pytest -q python/tests
