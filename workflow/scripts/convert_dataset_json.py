from segflow.convert import convert_dataset_json
from segflow.jobs import run_job

run_job(snakemake.log[0], convert_dataset_json, snakemake.input[0], snakemake.output[0])  # noqa: F821
