#!/usr/bin/env bash
# Set up and run every test: Rust unit and integration tests (sqllogictest over sql/, engine, Flight server), then
# the Python suite against the real `marrow` binary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
# --all-targets resolves features as `cargo test` does, so the binary and the tests share one build.
cargo build --workspace --all-targets
cargo test --workspace
FLIGHT_SQL_CLIENT="$HOME/.cache/marrow-tools/bin/flight_sql_client" MARROW_BIN="$CARGO_TARGET_DIR/debug/marrow" .venv/bin/python -m pytest -q python/tests
