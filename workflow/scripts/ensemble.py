from segflow.ensemble import ensemble_crossval
from segflow.jobs import run_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(
    sm.log[0],
    ensemble_crossval,
    list(sm.input.first),
    list(sm.input.second),
    sm.input.dataset_json,
    sm.params.labels_dir,
    sm.output[0],
    tolerance=sm.params.tolerance,
)
