from segflow.budget import estimate_budget
from segflow.device import claimed_gpu
from segflow.jobs import run_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
p = sm.params
with claimed_gpu(enabled=p.device != "cpu"):  # timed where a training job would run
    run_job(
        sm.log[0],
        estimate_budget,
        p.dataset,
        sm.input.dataset_json,
        p.candidates,
        p.train,
        p.folds,
        p.jobs,
        sm.output[0],
        device=p.device,
        threads=sm.threads,
    )
