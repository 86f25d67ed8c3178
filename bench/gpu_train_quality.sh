#!/usr/bin/env bash
# bench/train_quality.py on a lent GPU machine, both frameworks with CUDA + AMP, trained side by side.
# That machine has torch but neither snakemake nor the imaging packages: carry nnunetv2 and its needs as
# wheels in .whl, empty SimpleITK/imagecodecs modules in .stubs (see gpu_train_step.sh), and segflow's
# preprocessed Hippocampus results (plans.json, splits.json, raw/dataset.json, preprocessed/3d_fullres) as
# .gpudata/hippocampus_preprocessed.tar.xz, made here after a workflow run with
#   tar cJf .gpudata/hippocampus_preprocessed.tar.xz -C RESULTS plans.json splits.json raw/dataset.json \
#       preprocessed/3d_fullres
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/.stubs:$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp}"
mkdir -p /tmp/hippocampus && tar xJf .gpudata/hippocampus_preprocessed.tar.xz -C /tmp/hippocampus
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
common=(--device cuda --nnunet-python python3 --segflow-results /tmp/hippocampus --parallel --threads 8 --workers 7)
python3 bench/train_quality.py "${common[@]}" --epochs 8 --iterations 20 --val-iterations 5 --repeats 3 \
  --work /tmp/tq_small --json "$OUT/train_quality_gpu_small.json"
python3 bench/train_quality.py "${common[@]}" --epochs "${EPOCHS:-50}" --iterations 100 --val-iterations 10 \
  --work /tmp/tq_large --json "$OUT/train_quality_gpu_large.json"
