#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default: a tiny GPT-NeoX trains on stdlib source and
# writes checkpoints into demo-output/bucket/ while the watcher measures each one (local Ray, CPU, wandb offline).
# Extra arguments go to `python -m llc_service.demo.run` (see --help), e.g. `scripts/demo.sh --fresh`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
export WANDB_MODE="${WANDB_MODE:-offline}"
exec .venv/bin/python -m llc_service.demo.run "$@"
