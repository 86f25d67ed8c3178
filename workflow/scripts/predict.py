import torch

from segflow.device import claimed_gpu
from segflow.infer import SlidingWindow
from segflow.io import load_json
from segflow.jobs import images_per_case, run_job
from segflow.predict import predict_cases

sm = snakemake  # noqa: F821 (injected by Snakemake)
torch.set_num_threads(sm.threads)
with claimed_gpu(enabled=sm.params.device != "cpu"):  # a workstation's GPUs, one per job
    run_job(
        sm.log[0],
        predict_cases,
        images_per_case(sm),
        list(sm.output),
        sm.params.model,
        load_json(sm.input.selection),
        device=sm.params.device,
        window=SlidingWindow(step=sm.params.step, mirror=sm.params.mirror),
    )
