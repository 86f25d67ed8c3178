from segflow.demo import generate
from segflow.jobs import run_job

s = snakemake.params.settings  # noqa: F821 (injected by Snakemake)
run_job(
    snakemake.log[0],  # noqa: F821
    generate,
    snakemake.params.root,  # noqa: F821
    cases=s["cases"],
    test_cases=s["test_cases"],
    channels=s["channels"],
    anisotropic=s["anisotropic"],
    seed=s["seed"],
)
