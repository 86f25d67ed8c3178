#!/usr/bin/env bash
# Issue 14's GPU figures on a lent GPU machine, both frameworks with CUDA + AMP and the same torch build:
# the augmentation of one batch (batchgeneratorsv2 per sample vs segflow batched on the GPU), then
# bench/train_step.py for the BraTS-like plan with 8 and with 16 data-loading workers and for Hippocampus
# with 8 (seconds per iteration, loader CPU seconds per batch, peak GPU memory); issue 15's: the same for the
# ResEnc M and L plans (BraTS-like and Hippocampus, 8 workers); issue 34's: MedNeXt L on Hippocampus (NETWORKS,
# segflow alone: nnunetv2 2.8.1 has no MedNeXt); issue 36's: the budget probe's estimate of a step beside the
# measured step (BraTS-like and Hippocampus). That machine has torch but
# none of the imaging packages: bench/gpu_prepare.py makes, here, the wheels (.whl) and the empty SimpleITK
# and imagecodecs modules (.stubs: nnunetv2 imports them at start-up but training never calls them) to carry.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/.stubs:$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 bench/augment.py --device cuda --batches 10
step() {  # plan, workers, planner, further options
  python3 bench/train_step.py --device cuda --nnunet-python python3 --plans "$1" --workers "$2" --threads 1 \
    --planner "${3:-default}" --iterations "${ITERATIONS:-30}" --warmup "${WARMUP:-5}" --cases 16 --work /tmp/bench \
    --json "$OUT/train_step_$1_$2_${3:-default}.json" "${@:4}"
}
step brats 8 default --budget-probe  # issue 36: the budget's estimate of a GPU step against the measured one
step brats 16
step hippocampus 8 default --budget-probe
for planner in ${PRESETS-resenc_m resenc_l}; do  # PRESETS="": issue 14's plans alone
  step brats 8 "$planner"
  step hippocampus 8 "$planner"
done
for network in ${NETWORKS-mednext}; do  # issue 34: segflow's other networks on Hippocampus (segflow alone)
  python3 bench/train_step.py --device cuda --segflow-only --plans hippocampus --network "$network" --workers 8 \
    --threads 1 --iterations "${ITERATIONS:-30}" --warmup "${WARMUP:-5}" --cases 16 --work /tmp/bench \
    --json "$OUT/train_step_hippocampus_8_$network.json"
done
