from segflow.jobs import run_job
from segflow.splits import write_splits

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(sm.log[0], write_splits, sm.params.cases, sm.output[0], user_splits=sm.params.user_splits)
