from segflow.jobs import images_per_case, run_job, write_batch_manifest
from segflow.verify import verify_batch

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(
    sm.log[0],
    verify_batch,
    sm.params.cases,
    images_per_case(sm),
    list(sm.input.labels),
    sm.input.dataset_json,
    list(sm.output.records),
)
write_batch_manifest(sm)
