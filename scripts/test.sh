#!/usr/bin/env bash
# Set up (if needed) and run the tests. `scripts/test.sh --slow` runs only the long statistical tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline RAY_USAGE_STATS_ENABLED=0
if [ "${1:-}" = "--slow" ]; then
  shift
  exec .venv/bin/python -m pytest -m slow "$@"
fi
exec .venv/bin/python -m pytest "$@"
