#!/usr/bin/env bash
# RUSTC_WRAPPER for scripts/fuzz.sh: coverage instrumentation only where the fuzz targets' inputs are interpreted
# (Marrow's crates, the SQL parser and planner front end, Flight/IPC decoding, JSON). libFuzzer scans every coverage
# counter after each execution; instrumenting Lance, DataFusion's execution and the rest of the dependency tree made
# that scan, not the code under test, the cost of an execution. Uninstrumented crates still panic and abort as usual,
# and build with the default codegen units (the instrumented ones keep cargo fuzz's single unit).
set -euo pipefail
rustc="$1"
shift
crate=""
prev=""
for a in "$@"; do
  if [ "$prev" = "--crate-name" ]; then crate="$a"; break; fi
  prev="$a"
done
case "$crate" in
  marrow_* | sqlparser | datafusion_sql | datafusion_expr | arrow_flight | arrow_ipc | serde_json | safetensors)
    exec "$rustc" "$@"
    ;;
esac
args=()
for a in "$@"; do
  case "$a" in
    -Cpasses=sancov-module | -Cllvm-args=-sanitizer-coverage-*) ;;
    -Ccodegen-units=1) args+=("-Ccodegen-units=16") ;;
    *) args+=("$a") ;;
  esac
done
exec "$rustc" "${args[@]}"
