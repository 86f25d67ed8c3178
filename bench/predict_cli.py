"""Benchmark: `segflow predict` against the workflow's own `predict` job, on the demo's test images with the
demo run's selected model: CPU time (user + system of the process tree) and wall time, round by round.

The demo runs once in ``--work`` (the default run, reused when it is there). Each round then runs, in turn:
* the job: ``snakemake --forcerun predict_b000 prediction`` (the job's process and Snakemake's own work), and the
  same command with ``-n`` (Snakemake's own work alone: parsing, the DAG); the job's cost is the difference;
* the command: selection.json's ``reproduce`` command (``segflow predict``), as written, into a scratch folder.
The ratio (command / job) of each round, and their median, are printed (``--json`` keeps them).

Usage: python bench/predict_cli.py [--rounds 3] [--work /tmp/segflow-bench-predict-cli] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from benchlib import snakemake_command

DEMO = "Task900_SegflowDemo"


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cost(command, cwd: Path) -> dict:
    """CPU seconds (the finished children's user + system) and wall seconds of one command."""
    cpu, started = children_cpu_seconds(), time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return {"cpu_s": children_cpu_seconds() - cpu, "wall_s": time.perf_counter() - started}


def one_round(work: Path) -> dict:
    job = snakemake_command(work, targets=["prediction"]) + ["--forcerun", "predict_b000"]
    with_job, dry = cost(job, work), cost([*job, "-n"], work)
    selection = json.loads((work / "results" / DEMO / "selection.json").read_text())
    reproduce = shlex.split(selection["reproduce"]["command"])
    scratch = work / "predictions_cli"
    shutil.rmtree(scratch, ignore_errors=True)
    reproduce[reproduce.index("-o") + 1] = str(scratch)
    command = cost(reproduce, work)
    job_cpu = with_job["cpu_s"] - dry["cpu_s"]
    return {
        "job_cpu_s": job_cpu,
        "snakemake_cpu_s": dry["cpu_s"],
        "command_cpu_s": command["cpu_s"],
        "command_wall_s": command["wall_s"],
        "ratio": command["cpu_s"] / job_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/segflow-bench-predict-cli"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not (args.work / "results" / DEMO / "selection.json").is_file():
        subprocess.run(snakemake_command(args.work), check=True)
    rounds = []
    for r in range(args.rounds):
        rounds.append(one_round(args.work))
        row = rounds[-1]
        print(
            f"round {r + 1}: predict job {row['job_cpu_s']:.2f} CPU s (snakemake's own {row['snakemake_cpu_s']:.2f} s "
            f"left out), segflow predict {row['command_cpu_s']:.2f} CPU s ({row['command_wall_s']:.1f} s wall): "
            f"ratio {row['ratio']:.2f}"
        )
    median = statistics.median(r["ratio"] for r in rounds)
    print(f"segflow predict / predict job, CPU time: median {median:.2f} over {len(rounds)} rounds")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "median_ratio": median}, indent=1))


if __name__ == "__main__":
    main()
