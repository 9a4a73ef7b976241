#!/usr/bin/env bash
# The one build both README commands share: every crate and every test target in one feature resolution, so running
# the server after the tests (or the other way round) reuses the same artifacts instead of compiling lance and
# DataFusion a second time. A second run is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build --workspace --all-targets
