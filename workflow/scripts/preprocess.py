from segflow.jobs import images_per_case, run_job
from segflow.preprocess import preprocess_batch

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(
    sm.log[0],
    preprocess_batch,
    sm.params.cases,
    images_per_case(sm),
    list(sm.input.labels),
    sm.input.plans,
    sm.input.dataset_json,
    sm.params.configuration,
    list(sm.output.data),
    list(sm.output.seg),
    list(sm.output.properties),
)
