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
# lint first (configured in pyproject.toml): a style or import-order slip fails the run in seconds, not minutes
.venv/bin/ruff check llc_service tests scripts jobs
exec .venv/bin/python -m pytest "$@"
