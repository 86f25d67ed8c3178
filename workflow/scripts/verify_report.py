from segflow.jobs import run_job
from segflow.verify import write_report

run_job(snakemake.log[0], write_report, list(snakemake.input), snakemake.output[0])  # noqa: F821
