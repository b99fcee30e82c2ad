#!/usr/bin/env bash
# Create .venv/ in the repo root and install llc-service into it (editable, with test extras).
# Quick when .venv already matches pyproject.toml. torch is pinned to the CPU build this machine carries;
# on a GPU node install the CUDA build of the same torch first (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.llc-setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "setting up .venv (torch CPU + llc-service[test]); this takes a few minutes the first time" >&2
.venv/bin/pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install --quiet "torch==2.13.0" -e ".[test]" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -c "import llc_service, torch, transformers, ray, accelerate, wandb, moto" \
  || { echo "setup failed: llc-service or a dependency does not import" >&2; exit 1; }
echo "$want" > "$stamp"
