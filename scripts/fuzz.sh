#!/usr/bin/env bash
# Fuzz Marrow's inputs with cargo fuzz (libFuzzer, nightly), each target for a bounded time, growing the committed
# corpus in fuzz/corpus/<target>/ and printing each target's executions. A scheduled job, not part of scripts/test.sh
# (which replays the corpus in every run). A crash leaves its input in fuzz/artifacts/<target>/ and fails the script.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET (600)] [TARGET ...]   (targets: fuzz/fuzz_targets/*.rs)
# FUZZ_RUNS=N ends a target after N executions if that comes before its time (e.g. FUZZ_RUNS=10000000).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
SECONDS_PER_TARGET=${1:-600}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
fi
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The instrumented build lives apart from the main target directory (other flags, other toolchain).
export CARGO_TARGET_DIR="$CARGO_TARGET_DIR-fuzz"
# Coverage only in the crates that interpret the inputs (see fuzz-rustc.sh).
export RUSTC_WRAPPER="$PWD/scripts/fuzz-rustc.sh"
[ -d fuzz/corpus/sql_parse ] || .venv/bin/python fuzz/seed.py
cd fuzz
# No sanitizer: Marrow's unsafe code is its SIMD kernels, tested against scalar references; libFuzzer's coverage
# and the Rust panics/overflow checks are what finds parser bugs, at twice ASan's speed.
FLAGS=(--sanitizer none --debug-assertions --release)
cargo +nightly fuzz build "${FLAGS[@]}"
mkdir -p ../fuzz/logs
status=0
for t in "${TARGETS[@]}"; do
  log="logs/$t.log"
  started=$SECONDS
  # -fork would hide the executions count; one process, bounded time, 30 s per input.
  if ! cargo +nightly fuzz run "${FLAGS[@]}" "$t" "corpus/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -timeout=30 -rss_limit_mb=6144 -max_len=65536 \
      -print_final_stats=1 ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} >"$log" 2>&1; then
    status=1
    echo "fuzz target $t: CRASH (see fuzz/$log and fuzz/artifacts/$t/)"
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  echo "fuzz target $t: ${execs:-?} executions in $((SECONDS - started)) s (${rate:-?}/s), corpus $(ls "corpus/$t" | wc -l) inputs"
done
exit $status
