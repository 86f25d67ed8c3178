from segflow.jobs import run_job
from segflow.plan import write_plans

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(
    sm.log[0],
    write_plans,
    sm.input.fingerprint,
    sm.input.dataset_json,
    sm.output.plans,
    gpu_memory_gb=sm.params.gpu_memory_target_gb,
    dataset_name=sm.params.name,
    planner=sm.params.planner,
)
