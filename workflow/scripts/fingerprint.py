from segflow.fingerprint import write_fingerprint
from segflow.jobs import run_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(sm.log[0], write_fingerprint, list(sm.input.records), list(sm.input.foreground), sm.output[0])
