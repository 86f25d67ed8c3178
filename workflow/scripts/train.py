from pathlib import Path

from segflow.device import claimed_gpu
from segflow.jobs import run_job
from segflow.train.loop import train
from segflow.train.settings import settings_from_config

sm = snakemake  # noqa: F821 (injected by Snakemake)
settings = settings_from_config(sm.params.settings, sm.input.get("pretrained"))
with claimed_gpu(enabled=sm.params.device != "cpu"):  # a workstation's GPUs, one per job
    run_job(
        sm.log[0],
        train,
        sm.input.plans,
        sm.input.dataset_json,
        sm.input.splits,
        sm.params.preprocessed,
        sm.params.configuration,
        sm.wildcards.fold,
        Path(sm.output.final).parent,
        settings,
        device=sm.params.device,
        threads=sm.threads,
        previous_stage_dirs=list(sm.input.previous_stage),
        reads=sm.input.data,
    )
