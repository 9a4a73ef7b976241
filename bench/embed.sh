#!/usr/bin/env bash
# Issue 5's benchmark (release build): embed() sentences/s at ~16 and ~128 tokens (raw call and SQL) against the FLOP
# estimate, and tokenization MB/s through SQL next to the Python `tokenizers` package on the same corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build --release -p marrow-engine --example scan_bench --example vector_bench --example embed_bench -p marrow-flight --bin marrow
CORPUS=/tmp/marrow-embed-corpus.txt
"$CARGO_TARGET_DIR/release/examples/embed_bench" "$MARROW_MODEL_DIR" "$CORPUS" "${1:-512}"
.venv/bin/python - "$MARROW_MODEL_DIR/tokenizer.json" "$CORPUS" <<'PY'
import sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1]); tok.no_padding(); tok.no_truncation()
lines = open(sys.argv[2], encoding="utf-8").read().split("\n")
size = sum(len(l.encode()) for l in lines)
best = min((lambda t0: (tok.encode_batch_fast(lines), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(3))
print(f"python tokenizers encode_batch_fast {size / best / 1e6:>7.1f} MB/s  ({len(lines)} sentences, best of 3)")
PY
