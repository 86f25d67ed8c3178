#!/usr/bin/env bash
# bench/train_quality.py on a lent GPU machine, both frameworks with CUDA + AMP, trained side by side.
# That machine has torch but neither snakemake nor the imaging packages: bench/gpu_prepare.py makes, here,
# what to carry (.whl, .stubs, and .gpudata/hippocampus_preprocessed.tar.xz: segflow's preprocessed
# Hippocampus results, plans.json, splits.json, raw/dataset.json and preprocessed/3d_fullres).
# The budget: EPOCHS x ITERATIONS (VAL_ITERATIONS per epoch), REPEATS runs per framework, JOBS at a time,
# segflow with AUGMENT_ON (device, workers or both); SMALL=1 adds issue 14's 8 x 20 budget first.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/.stubs:$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp}"
mkdir -p /tmp/hippocampus && tar xJf .gpudata/hippocampus_preprocessed.tar.xz -C /tmp/hippocampus
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
jobs="${JOBS:-2}"
threads=$(( $(nproc) / jobs ))  # each run's share of the cores: segflow's threads, nnunetv2's workers + 1
common=(--device cuda --nnunet-python python3 --segflow-results /tmp/hippocampus --jobs "$jobs"
  --threads "$threads" --workers "$(( threads - 1 ))" --augment-on ${AUGMENT_ON:-device})
if [ "${SMALL:-0}" = 1 ]; then
  python3 bench/train_quality.py "${common[@]}" --epochs 8 --iterations 20 --val-iterations 5 --repeats 3 \
    --work /tmp/tq_small --json "$OUT/train_quality_gpu_small.json"
fi
python3 bench/train_quality.py "${common[@]}" --epochs "${EPOCHS:-50}" --iterations "${ITERATIONS:-100}" \
  --val-iterations "${VAL_ITERATIONS:-10}" --repeats "${REPEATS:-3}" --work /tmp/tq_large \
  --json "$OUT/train_quality_gpu.json"
