"""What every Snakemake start costs on a large dataset (4^3 volumes, so that only the DAG counts), for each
case count given: `snakemake -n` in four states of a run, each with the default profile (as a workstation user
runs it) and with `--profile profiles/slurm`:

* fresh: nothing run yet (the DAG up to the plan checkpoint);
* per-case stages done: verification and cropping run, the plan not yet (a large run under way);
* planned: the plan exists, the preprocessing not yet (every stage: preprocessing, 5 folds x configurations of
  training, validation, ...);
* preprocessed: the plan and the preprocessing done (training and what follows pending);

With ``--plain-python``, the default profile is timed a second time with that Python: an environment made
by the Quick start's install alone (`pip install .`), as a workstation user has it. The test extras install
the SLURM executor plugin, which every Snakemake start then imports (with pandas, about 0.4 s quiet) and
asks SLURM for its configuration.

And the start-up of one cluster job: the command SLURM runs for the fingerprint job (the executor's own,
captured from its sbatch call), timed from its launch until the job's script starts (the first line of the
job's log). Needs the SLURM executor plugin and a reachable SLURM controller (for example
tests/slurm/local_slurm.sh start: with the plugin installed and no controller, every Snakemake start waits up
to 10 s for `scontrol show config`, the plugin's own check). Targets at 10 000 cases: before the plan < 10 s,
with it < 30 s, a job's start-up < 10 s.

    python bench/dry_run.py [--cases 1000 5000 10000] [--repeats 3] [--work DIR] [--plain-python PYTHON]
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


STATES = ("fresh", "per-case stages done", "planned", "preprocessed")
PLAIN = "default, plain install"


def profiles(plain_python: str | None) -> dict[str, tuple[str, list[str]]]:
    """Each measured way to start Snakemake: its Python and its options."""
    found = {"default": (sys.executable, []), "slurm": (sys.executable, SLURM)}
    return found | ({PLAIN: (plain_python, [])} if plain_python else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, nargs="+", default=[1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="keep the datasets and runs here (default: a temporary folder)")
    parser.add_argument("--plain-python", help="a Python with segflow from `pip install .` alone (no SLURM plugin)")
    args = parser.parse_args()
    ways = profiles(args.plain_python)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        rows = [measure(work / f"cases_{n}", n, args.repeats, ways) for n in args.cases]
    header = " | ".join(f"{state}, {profile}" for state in STATES for profile in ways)
    print(f"\ncases | {header} | one job's start-up | running to the plan")
    for n, dry_runs, startup, to_plan in rows:
        cells = " | ".join(f"{dry_runs[state, profile][0]:.1f} s" for state in STATES for profile in ways)
        jobs = dry_runs["planned", "default"][1]
        print(f"{n} | {cells} | {startup:.1f} s | {to_plan:.0f} s ({jobs} jobs once planned)")


def measure(workdir: Path, n_cases: int, repeats: int, ways: dict):
    dataset = workdir / "Dataset999_Many"
    if not (dataset / "dataset.json").is_file():
        write_tiny_dataset(dataset, n_cases)
    for previous_run in (workdir / "results", workdir / ".snakemake"):
        shutil.rmtree(previous_run, ignore_errors=True)
    config = f"dataset={dataset}"
    dry_run = [c for c in snakemake_command(workdir, config) if c != "-q"] + ["-n"]
    dry_runs = {}

    def time_state(state: str) -> None:
        for profile, (python, options) in ways.items():
            dry_runs[state, profile] = time_dry_runs(
                [python, *dry_run[1:], *options], repeats, f"{n_cases} cases, {state}, {profile}"
            )

    time_state("fresh")
    subprocess.run([*snakemake_command(workdir, config), "--omit-from", "fingerprint"], check=True)
    time_state("per-case stages done")
    started = time.perf_counter()
    subprocess.run(snakemake_command(workdir, config, targets=[plans_path(dataset)]), check=True)
    to_plan = time.perf_counter() - started
    print(f"{n_cases} cases: running to the plan took {to_plan:.0f} s")
    time_state("planned")
    subprocess.run(snakemake_command(workdir, config, targets=["preprocessing"]), check=True)
    time_state("preprocessed")
    startup = job_startup(workdir, config, dataset)
    print(f"{n_cases} cases: a cluster job (fingerprint) starts its script {startup:.1f} s after its command")
    return n_cases, dry_runs, startup, to_plan


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
