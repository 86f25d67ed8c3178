from pathlib import Path

import torch

from segflow.device import claimed_gpu
from segflow.infer import SlidingWindow
from segflow.jobs import run_job
from segflow.validate import validate_fold

sm = snakemake  # noqa: F821 (injected by Snakemake)
torch.set_num_threads(sm.threads)
with claimed_gpu(enabled=sm.params.device != "cpu"):  # a workstation's GPUs, one per job
    run_job(
        sm.log[0],
        validate_fold,
        sm.input.plans,
        sm.input.dataset_json,
        sm.input.splits,
        sm.params.preprocessed,
        sm.params.configuration,
        sm.wildcards.fold,
        sm.input.checkpoint,
        sm.params.labels_dir,
        Path(sm.output[0]),
        device=sm.params.device,
        with_probabilities=sm.params.with_probabilities,
        tolerance=sm.params.tolerance,
        previous_stage_dirs=list(sm.input.previous_stage),
        reads=sm.input.data,
        next_stage=sm.params.next_stage,
        window=SlidingWindow(step=sm.params.step, mirror=sm.params.mirror),
    )
