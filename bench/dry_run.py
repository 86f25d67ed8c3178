"""What every Snakemake start costs on a large dataset (4^3 volumes, so that only the DAG counts), for each
case count given: `snakemake -n --profile profiles/slurm` with nothing run yet (the DAG up to the plan
checkpoint) and once the plan exists (every stage: preprocessing, 5 folds x configurations of training,
validation, ...), and the start-up of one cluster job: the command SLURM runs for the fingerprint job (the
executor's own, captured from its sbatch call), timed from its launch until the job's script starts (the
first line of the job's log). Needs the SLURM executor plugin and a reachable SLURM controller (for example
tests/slurm/local_slurm.sh start). Targets at 10 000 cases: before the plan < 10 s, with it < 30 s, a job's
start-up < 10 s.

    python bench/dry_run.py [--cases 1000 5000 10000] [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchlib import REPO, snakemake_command

sys.path.insert(0, str(REPO / "tests"))
from conftest import scheduled_jobs, write_tiny_dataset  # noqa: E402

# The local cluster has no accounting database: squeue for the job states, checked every 2 s.
SLURM = ["--profile", str(REPO / "profiles" / "slurm"), "--slurm-status-command", "squeue"]
SLURM_POLLING = ["--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, nargs="+", default=[1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="keep the datasets and runs here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        rows = [measure(work / f"cases_{n}", n, args.repeats) for n in args.cases]
    print("\ncases | before the plan | with the plan (jobs) | one job's start-up | running to the plan")
    for n, before, (with_plan, jobs), startup, to_plan in rows:
        print(f"{n} | {before:.1f} s | {with_plan:.1f} s ({jobs}) | {startup:.1f} s | {to_plan:.0f} s")


def measure(workdir: Path, n_cases: int, repeats: int):
    dataset = workdir / "Dataset999_Many"
    if not (dataset / "dataset.json").is_file():
        write_tiny_dataset(dataset, n_cases)
    for previous_run in (workdir / "results", workdir / ".snakemake"):
        shutil.rmtree(previous_run, ignore_errors=True)
    workdir_config = f"dataset={dataset}"
    dry_run = [c for c in snakemake_command(workdir, workdir_config) if c != "-q"] + ["-n", *SLURM]
    before, _ = time_dry_runs(dry_run, repeats, f"{n_cases} cases, before the plan")
    started = time.perf_counter()
    subprocess.run(snakemake_command(workdir, workdir_config, targets=[plans_path(dataset)]), check=True)
    to_plan = time.perf_counter() - started
    print(f"{n_cases} cases: running to the plan took {to_plan:.0f} s")
    with_plan = time_dry_runs(dry_run, repeats, f"{n_cases} cases, with the plan")
    startup = job_startup(workdir, workdir_config, dataset)
    print(f"{n_cases} cases: a cluster job (fingerprint) starts its script {startup:.1f} s after its command")
    return n_cases, before, with_plan, startup, to_plan


def plans_path(dataset: Path) -> str:
    return f"results/{dataset.name}/plans.json"


def time_dry_runs(command: list[str], repeats: int, when: str) -> tuple[float, int]:
    """The fastest of ``repeats`` dry-runs (the others measure what else the machine did) and its job count."""
    times = []
    for attempt in range(repeats):
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - started)
        jobs = scheduled_jobs(result.stdout)
        print(f"{when}, run {attempt + 1}: {times[-1]:.1f} s, {sum(jobs.values())} jobs")
    print(f"{when}, jobs:", ", ".join(f"{rule} {n}" for rule, n in jobs.items() if not re.search(r"_b\d+$", rule)))
    return min(times), sum(jobs.values())


def job_startup(workdir: Path, config: str, dataset: Path) -> float:
    """Seconds from the launch of the command SLURM runs for the fingerprint job until its script starts."""
    fingerprint = f"results/{dataset.name}/fingerprint.json"
    command = snakemake_command(workdir, config, targets=[fingerprint])
    command = [c for c in command if c != "-q"] + [*SLURM, *SLURM_POLLING, "--forcerun", "fingerprint", "--verbose"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    wrapped = re.search(r'sbatch call: .*--comment rule_fingerprint .*--wrap="(.*)"', result.stdout + result.stderr)
    if wrapped is None:
        raise SystemExit("no sbatch call for the fingerprint job in snakemake's output")
    # Without the files to wait for: they name the submitting run's scratch folder, gone once it ended (the
    # outputs they wait for exist).
    job_command = re.sub(r"--wait-for-files(-file)? ('[^']*' ?)+", "", wrapped[1])
    log = workdir / f"results/{dataset.name}/logs/fingerprint.log"
    launched = datetime.now()
    subprocess.run(["bash", "-c", job_command], cwd=workdir, check=True, capture_output=True)
    first_line = log.read_text().splitlines()[0]
    script_started = datetime.strptime(first_line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return (script_started - launched).total_seconds()


if __name__ == "__main__":
    main()
