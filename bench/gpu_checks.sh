#!/usr/bin/env bash
# Every GPU check of issues 14 and 33 in one command that fits a lent machine's 10 minutes (run
# bench/gpu_prepare.py here first; carry .whl, .stubs and .gpudata):
#   1. bench/augment.py: one batch's augmentation, batchgeneratorsv2 per sample against segflow's batched
#      transforms on the GPU;
#   2. bench/train_step.py with CUDA + AMP, both frameworks: BraTS-like with 8 and 16 data-loading workers,
#      Hippocampus with 8 (s/iteration, loader CPU s per batch, peak GPU memory), and MedNeXt L on Hippocampus
#      (segflow alone, issue 34);
#   3. bench/train_quality.py: Hippocampus fold 0, three runs per framework (seeds 0-2), three at a time.
# Each part has a wall-clock limit; train_quality writes every finished run to its JSON at once, so what a
# limit cuts off is missing from the record, never half in it. Figures land in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
part() {  # seconds, command...: runs it under a limit, remembers a failure, goes on
  local limit=$1; shift
  timeout "$limit" "$@" || { echo "== '$*' ended with status $? (limit ${limit} s)"; status=1; }
}
part 270 env PRESETS="" ITERATIONS="${ITERATIONS:-12}" WARMUP=3 bash bench/gpu_train_step.sh
part 300 env JOBS=3 EPOCHS="${EPOCHS:-10}" ITERATIONS=40 VAL_ITERATIONS=5 REPEATS=3 AUGMENT_ON=device \
  bash bench/gpu_train_quality.sh
exit $status
