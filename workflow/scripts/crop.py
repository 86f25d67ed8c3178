from segflow.crop import crop_batch
from segflow.jobs import images_per_case, run_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(
    sm.log[0],
    crop_batch,
    sm.params.cases,
    images_per_case(sm),
    list(sm.input.labels),
    list(sm.output.records),
    list(sm.output.foreground),
)
