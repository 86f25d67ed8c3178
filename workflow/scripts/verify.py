from segflow.jobs import chunks, run_job
from segflow.verify import verify_batch

sm = snakemake  # noqa: F821 (injected by Snakemake)
cases = sm.params.cases
run_job(
    sm.log[0],
    verify_batch,
    cases,
    chunks(sm.input.images, [sm.params.channels] * len(cases)),
    list(sm.input.labels),
    sm.input.dataset_json,
    list(sm.output),
)
