from segflow.batches import files_in_manifests
from segflow.jobs import run_job
from segflow.verify import write_report

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(sm.log[0], write_report, files_in_manifests(sm.input, "records"), sm.output[0], reads=sm.input)
