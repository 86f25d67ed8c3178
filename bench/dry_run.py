"""How long `snakemake -n --profile profiles/slurm` takes on a 1 000-case dataset (4^3 volumes), and how many
jobs it would submit: first with nothing run yet (the DAG up to the plan checkpoint), then once the plan
exists (every stage: preprocessing, 5 folds x configurations of training, validation, ...). Needs the SLURM
executor plugin and a reachable SLURM controller (for example tests/slurm/local_slurm.sh start); target:
under 30 s.

    python bench/dry_run.py [--cases 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO, snakemake_command

sys.path.insert(0, str(REPO / "tests"))
from conftest import scheduled_jobs, write_tiny_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        dataset = workdir / "Dataset999_Many"
        write_tiny_dataset(dataset, args.cases)
        command = snakemake_command(workdir, f"dataset={dataset}")
        command = [c for c in command if c != "-q"]  # nnU-Net's five folds: the default for a dataset
        command += ["-n", "--profile", str(REPO / "profiles" / "slurm")]
        time_dry_runs(command, args, "before the plan")
        plans = f"results/{dataset.name}/plans.json"
        up_to_plan = snakemake_command(workdir, f"dataset={dataset}")
        up_to_plan.insert(3, plans)  # the target before the options that take several values
        subprocess.run(up_to_plan, check=True)
        time_dry_runs(command, args, "with the plan")


def time_dry_runs(command: list[str], args, when: str) -> None:
    for attempt in range(args.repeats):
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        jobs = scheduled_jobs(result.stdout)
        print(f"{when}, run {attempt + 1}: {seconds:.1f} s, {sum(jobs.values())} jobs for {args.cases} cases")
    print(f"{when}, jobs:", ", ".join(f"{rule} {n}" for rule, n in jobs.items()))


if __name__ == "__main__":
    main()
