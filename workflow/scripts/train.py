from pathlib import Path

from segflow.device import claimed_gpu
from segflow.jobs import run_job
from segflow.train.loop import TrainSettings, train

sm = snakemake  # noqa: F821 (injected by Snakemake)
s = sm.params.settings
settings = TrainSettings(
    epochs=s["epochs"],
    iterations_per_epoch=s["iterations_per_epoch"],
    val_iterations=s["val_iterations"],
    seed=s["seed"],
    augment_on=s["augment_on"],
    pretrained_weights=sm.input.get("pretrained"),
)
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
    )
