from segflow.jobs import images_per_case, run_batch_job
from segflow.verify import verify_batch

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_batch_job(sm, verify_batch, sm.params.cases, images_per_case(sm), list(sm.input.labels), sm.input.dataset_json)
