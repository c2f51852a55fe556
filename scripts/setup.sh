#!/usr/bin/env bash
# Set up evogm in ./.venv: torch first (pinned to a CPU build where one is available, so that
# transformers and peft do not pull a multi-GB CUDA build), then evogm with the Ray, Bayesian-optimization,
# lm-eval and test extras.
# On a GPU machine, install the torch build you want into .venv first: this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==${EVOGM_TORCH:-2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[ray,bo,lm-eval,test]"
.venv/bin/python -c "import evogm, torch; print('evogm', evogm.__version__, 'ready | torch', torch.__version__)"
