from segflow.crop import crop_batch
from segflow.jobs import chunks, run_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
cases = sm.params.cases
run_job(
    sm.log[0],
    crop_batch,
    cases,
    chunks(sm.input.images, [sm.params.channels] * len(cases)),
    list(sm.input.labels),
    list(sm.output.records),
    list(sm.output.foreground),
)
