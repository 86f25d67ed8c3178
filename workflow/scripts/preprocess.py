from segflow.jobs import chunks, run_job
from segflow.preprocess import preprocess_batch

sm = snakemake  # noqa: F821 (injected by Snakemake)
cases = sm.params.cases
run_job(
    sm.log[0],
    preprocess_batch,
    cases,
    chunks(sm.input.images, [sm.params.channels] * len(cases)),
    list(sm.input.labels),
    sm.input.plans,
    sm.input.dataset_json,
    sm.wildcards.configuration,
    list(sm.output.data),
    list(sm.output.seg),
    list(sm.output.properties),
)
