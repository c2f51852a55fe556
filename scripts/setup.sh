#!/usr/bin/env bash
# Set up evogm in ./.venv: torch first (pinned to a CPU build where one is available, so that
# transformers and peft do not pull a multi-GB CUDA build), then evogm with the Ray, Bayesian-optimization,
# lm-eval and test extras, every dependency at the newest release its range in pyproject allows: a
# reused .venv is upgraded too (--upgrade-strategy eager), so it runs what a fresh one would.
# On a GPU machine, install the torch build you want into .venv first: this script keeps it (a
# constraint holds torch at the installed build while the rest moves).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==${EVOGM_TORCH:-2.13.0}"
fi
TORCH="$(.venv/bin/python -c "import torch; print(torch.__version__)")"
.venv/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c <(echo "torch==$TORCH") \
  -e ".[ray,bo,lm-eval,test]"
.venv/bin/python -c "import evogm; from evogm.versions import line; print('evogm', evogm.__version__, 'ready |', line())"
