from pathlib import Path

from segflow.evaluate import crossval_summary
from segflow.jobs import run_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
run_job(
    sm.log[0],
    crossval_summary,
    [Path(d) / "summary.json" for d in sm.input],
    sm.params.labels,
    sm.output.summary,
    sm.output.table,
)
