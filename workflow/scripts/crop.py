from segflow.crop import crop_batch
from segflow.jobs import run_batch_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_batch_job(sm, crop_batch, sm.params.cases, sm.params.raw["images"], sm.params.raw["labels"])
