#!/usr/bin/env bash
# The Rust test suite with simsimd's AVX-512 kernels compiled out, so the distance functions run the AVX2 (Haswell)
# kernels even on a CPU with AVX-512: results whose last bits depend on the kernel must still pass their stated
# bounds. Uses its own target directory (the flags change simsimd's build). Run on a schedule or before a release:
#   scripts/test-simd.sh [cargo test args…]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
export CARGO_TARGET_DIR="${SIMD_TARGET_DIR:-$CARGO_TARGET_DIR-avx2}"
for t in SKYLAKE ICE GENOA SAPPHIRE TURIN SIERRA; do export "SIMSIMD_TARGET_$t=0"; done
export SIMSIMD_TARGET_HASWELL=1
cargo test --workspace "$@"
