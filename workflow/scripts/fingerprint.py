from segflow.batches import files_in_manifests
from segflow.fingerprint import write_fingerprint
from segflow.jobs import run_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
records, foreground = (files_in_manifests(sm.input, kind) for kind in ("records", "foreground"))
run_job(sm.log[0], write_fingerprint, records, foreground, sm.output[0], reads=sm.input)
