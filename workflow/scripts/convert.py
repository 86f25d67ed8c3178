from segflow.convert import convert_batch
from segflow.jobs import chunks, run_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
cases = sm.params.cases
labels = list(sm.input.labels) if "labels" in sm.input.keys() else None  # images to predict have none
run_job(
    sm.log[0],
    convert_batch,
    cases,
    list(sm.input.images),
    chunks(sm.output.images, [sm.params.channels] * len(cases)),
    labels,
    list(sm.output.labels) if labels else None,
)
