"""``python -m snakemake`` with the SLURM executor plugin's status checks at a steady interval, for the tests.

The plugin waits 10 s longer before each status check that finds no job finished (up to 180 s): sensible on a
shared cluster, but on the local one it leaves the workflow idle for up to half a minute after each job, minutes
over a whole run. Here every check comes ``--seconds-between-status-checks`` after the one before. Jobs are
submitted, run and accounted for by SLURM exactly as without it."""

import snakemake_executor_plugin_slurm
from snakemake.cli import main


def steady_interval(executor) -> float:
    return executor.workflow.remote_execution_settings.seconds_between_status_checks


snakemake_executor_plugin_slurm.Executor.next_seconds_between_status_checks = property(
    steady_interval, lambda executor, backed_off: None
)

if __name__ == "__main__":
    main()
