#!/usr/bin/env bash
# Set up, build and run Marrow on ./marrow-data. With no arguments: the Flight SQL server on 127.0.0.1:50051.
# Any arguments are passed to `marrow` instead, e.g. `scripts/run.sh sql` for the local SQL shell.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
. scripts/env.sh  # again: setup installed the model package
scripts/build.sh
if [ $# -eq 0 ]; then
  set -- serve --data-dir ./marrow-data
fi
exec "$CARGO_TARGET_DIR/debug/marrow" "$@"
