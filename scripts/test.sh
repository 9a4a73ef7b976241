#!/usr/bin/env bash
# Set up and run every test: Rust unit and integration tests (sqllogictest over sql/, engine, Flight server), then
# the Python suite against the real `marrow` binary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
. scripts/env.sh  # again: setup installed the model package
# arrow-flight's own Flight SQL command-line client, used by the Python suite as an independent Rust client.
tools="$HOME/.cache/marrow-tools"
if [ ! -x "$tools/bin/flight_sql_client" ]; then
  echo "test: building arrow-flight's flight_sql_client"
  cargo install -q arrow-flight --version 58.4.1 --features cli,flight-sql,tls-ring --debug --locked --root "$tools"
fi
scripts/build.sh
cargo test --workspace
# The Python package's lint and types (configured in python/pyproject.toml), then its tests against the binary.
(cd python && ../.venv/bin/ruff check marrow examples && ../.venv/bin/ruff format --check marrow examples \
  && ../.venv/bin/mypy marrow examples)
FLIGHT_SQL_CLIENT="$tools/bin/flight_sql_client" MARROW_BIN="$CARGO_TARGET_DIR/debug/marrow" .venv/bin/python -m pytest -q python/tests
