#!/usr/bin/env bash
# segflow's prediction on a lent GPU machine (CUDA + AMP, mirrored copies as one batch) against the same
# command on that machine's CPU, for Hippocampus test images with freshly initialised 5-fold weights. That
# machine has torch but not SimpleITK, nibabel or batchgenerators: carry their wheels, plans.json,
# raw/dataset.json and a few test images in .gpuinfer (see the device notes):
#   .gpuinfer/*.whl, .gpuinfer/results/{plans.json,raw/dataset.json}, .gpuinfer/Task04_Hippocampus/imagesTs/
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpuinfer/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 bench/predict.py --segflow-results .gpuinfer/results --hippocampus .gpuinfer/Task04_Hippocampus \
  --cases "${CASES:-20}" --folds 5 --devices cuda cpu --work /tmp/bench_predict --json "${OUT:-/tmp}/predict_gpu.json"
