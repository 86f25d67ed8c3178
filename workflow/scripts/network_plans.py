from segflow.jobs import run_job
from segflow.networks import write_network_plans

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(sm.log[0], write_network_plans, sm.input.plans, sm.params.network, sm.output.plans)
