from segflow.convert import convert_test_batch
from segflow.jobs import chunks, run_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
cases = sm.params.cases
run_job(
    sm.log[0],
    convert_test_batch,
    cases,
    list(sm.input.images),
    chunks(sm.output.images, [sm.params.channels] * len(cases)),
)
