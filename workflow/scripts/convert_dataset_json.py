from segflow.convert import convert_dataset_json
from segflow.jobs import run_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(sm.log[0], convert_dataset_json, sm.input[0], sm.output[0], sm.params.labels, sm.params.regions_class_order)
