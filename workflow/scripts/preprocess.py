from segflow.jobs import run_batch_job
from segflow.preprocess import preprocess_batch

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_batch_job(
    sm,
    preprocess_batch,
    sm.params.cases,
    sm.params.raw["images"],
    sm.params.raw["labels"],
    sm.input.plans,
    sm.input.dataset_json,
    sm.params.configuration,
)
