# Sourced by the scripts: one persistent target directory outside the checkout, so a fresh clone reuses the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/marrow-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
