#!/usr/bin/env bash
# bench/train_step.py on a lent GPU machine, both frameworks with CUDA + AMP. That machine has torch but
# none of the imaging packages: carry them as wheels in .whl (see the device notes) and .stubs (empty
# SimpleITK and imagecodecs modules: nnunetv2 imports them at start-up but training never calls them).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/.stubs:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 bench/train_step.py --device cuda --nnunet-python python3 --workers 12 --threads 1 \
  --iterations "${ITERATIONS:-30}" --warmup 5 --cases 16 --work /tmp/bench --compare-layouts \
  --json "${OUT:-/tmp}/train_step_gpu.json"
