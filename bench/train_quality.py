"""Benchmark: training quality of segflow vs nnunetv2 2.8.1 on MSD Hippocampus, fold 0, 3d_fullres, with the
same reduced budget (epochs x iterations, validation iterations) and the same plan for both.

Reported per run: the final EMA pseudo Dice (nnU-Net's definition: global TP/FP/FN over the validation
batches of an epoch, mean over foreground labels, exponential moving average 0.9), the pseudo Dice and
training loss of every epoch, and the wall time; then, per framework (segflow once per ``--augment-on``), the
mean final EMA and, epoch by epoch, segflow's mean training loss against the range of nnunetv2's runs.
nnunetv2's values come from its training log, so no pickle is read.

Both frameworks train on the same preprocessed arrays: segflow's workflow preprocesses the dataset (its
arrays are bit-identical to nnunetv2's, see bench/preprocess.py), and nnunetv2 gets them in its own storage,
written by its own code. Both read one plans file: segflow's, with ``--width-divisor K`` dividing every stage's
features by K (a narrower U-Net that learns the same task on a CPU in minutes instead of hours). Neither runs
the final full-case validation.

``--repeats N`` trains N times each, run r with seed r: segflow's seed (initial weights, batches, augmentation);
nnunetv2's trainer seeds torch and numpy with it before it builds its network (its augmentation workers then
draw their own, as nnunetv2's NonDetMultiThreadedAugmenter does). Every finished run is written to ``--json``
at once, and a run already there (same budget, width and seed) is not trained again: a long comparison can be
stopped and continued, or spread over several sessions
(``--max-runs N`` trains only the next N pending runs, seed by seed).

Usage (CPU here): python bench/train_quality.py --width-divisor 4 --epochs 20 --iterations 25 --repeats 3 \
    --augment-on device workers --json tq.json
On a GPU machine, with segflow's preprocessed results carried there (no snakemake needed):
    python bench/train_quality.py --device cuda --nnunet-python python3 --segflow-results DIR --jobs 2 ...
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import (
    REPO,
    add_segflow_only,
    hippocampus_default,
    nnunet_budget_trainer,
    nnunet_env,
    nnunet_log_numbers,
    nnunet_plans,
    preprocessed_hippocampus,
    save_nnunet_case,
)

NNUNET_DATASET = "Dataset004_Hippocampus"
CONFIGURATION = "3d_fullres"
NNUNET = "nnunetv2"


def ema(values, alpha: float = 0.9) -> float:
    smoothed = None
    for value in values:
        smoothed = value if smoothed is None else alpha * smoothed + (1 - alpha) * value
    return smoothed


def nnunet_log_values(log_text: str) -> tuple[list[float], list[float]]:
    """Mean foreground pseudo Dice and training loss per epoch from nnunetv2's training log."""
    dice = []
    for match in re.finditer(r"Pseudo dice \[(.*?)\]", log_text):
        values = [float(v) for v in re.findall(r"[-+]?\d*\.\d+(?:e[-+]?\d+)?|nan", match.group(1))]
        finite = [v for v in values if v == v]
        dice.append(sum(finite) / len(finite) if finite else 0.0)
    return dice, nnunet_log_numbers(log_text, "train_loss")


# --- the plan and the data both frameworks read ------------------------------------------------------------


def narrowed_plans(plans: dict, divisor: int) -> dict:
    """The plans with every stage's features of the benchmarked configuration divided by ``divisor`` (at least
    one feature per stage); the rest (patch, batch, strides, normalisation) as planned."""
    plans = json.loads(json.dumps(plans))
    arch = plans["configurations"][CONFIGURATION]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [max(1, f // divisor) for f in arch["features_per_stage"]]
    return plans


def write_plans(results: Path, work: Path, divisor: int) -> Path:
    """The plans file both frameworks train with: segflow's own, or its narrowed copy in ``work``."""
    if divisor == 1:
        return results / "plans.json"
    path = work / f"plans_width_{divisor}.json"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(narrowed_plans(json.loads((results / "plans.json").read_text()), divisor), indent=1))
    return path


def export_for_nnunet(results: Path, plans_path: Path, base: Path) -> None:
    """nnunetv2's preprocessed folder made of segflow's arrays (runs in nnunetv2's Python)."""
    import numpy as np

    target = base / "preprocessed" / NNUNET_DATASET
    shutil.rmtree(target, ignore_errors=True)  # blosc2 does not overwrite a stored case
    folder = target / f"nnUNetPlans_{CONFIGURATION}"
    folder.mkdir(parents=True)
    plans = nnunet_plans(json.loads(plans_path.read_text()), NNUNET_DATASET)
    patch = plans["configurations"][CONFIGURATION]["patch_size"]
    source = results / "preprocessed" / CONFIGURATION
    for properties_file in sorted(source.glob("*.json")):
        case = properties_file.stem
        data = np.load(source / f"{case}.npy", allow_pickle=False)
        seg = np.load(source / f"{case}_seg.npy", allow_pickle=False)
        save_nnunet_case(folder, case, data, seg, json.loads(properties_file.read_text())["class_locations"], patch)
    (target / "nnUNetPlans.json").write_text(json.dumps(plans, indent=1))
    shutil.copy(results / "raw" / "dataset.json", target / "dataset.json")
    shutil.copy(results / "splits.json", target / "splits_final.json")
    (target / "dataset_fingerprint.json").write_text(json.dumps({"spacings": [], "shapes_after_crop": []}))


# --- training runs ---------------------------------------------------------------------------------------

SEEDED_INITIALIZE = """
    def initialize(self):
        # The benchmark's seed: the initial weights and the loader's draws in this process (its augmentation
        # workers seed themselves); the benchmark's threads, set after nnunetv2 set all cores.
        import numpy as np

        torch.manual_seed({seed})
        np.random.seed({seed})
        if {threads}:
            torch.set_num_threads({threads})
        super().initialize()
"""


def run_nnunet(args, base: Path, seed: int) -> dict:
    trainers = base / f"trainers_{seed}"
    trainers.mkdir(parents=True, exist_ok=True)
    # Full-case validation is left out: this benchmark compares the pseudo Dice of training.
    budget = {"epochs": args.epochs, "iterations": args.iterations, "val_iterations": args.val_iterations}
    name = f"nnUNetTrainerSegflowBudgetSeed{seed}"
    trainer = nnunet_budget_trainer(name, **budget, validate=False) + SEEDED_INITIALIZE.format(
        seed=seed, threads=args.nnunet_threads or 0
    )
    (trainers / "segflow_budget.py").write_text(trainer)
    env = nnunet_env(base, nnUNet_n_proc_DA=str(args.workers), nnUNet_extTrainer=str(trainers))
    env["nnUNet_results"] = str(base / f"results_{seed}")
    shutil.rmtree(env["nnUNet_results"], ignore_errors=True)
    entry = "from nnunetv2.run.run_training import run_training_entry; run_training_entry()"
    command = [args.nnunet_python, "-c", entry, "4", CONFIGURATION, "0", "-tr", name]
    started = time.perf_counter()
    result = subprocess.run([*command, "-device", args.device], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"nnunetv2 training failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    log = sorted(Path(env["nnUNet_results"]).rglob("training_log_*.txt"))[-1].read_text()
    dice, losses = nnunet_log_values(log)
    return {"wall_s": wall, "pseudo_dice": dice, "train_loss": losses, "ema_pseudo_dice": ema(dice)}


def run_segflow(args, results: Path, plans: Path, seed: int, augment_on: str) -> dict:
    """One segflow training in its own process (so runs can overlap with nnunetv2's)."""
    out = args.work / "segflow_train" / f"{augment_on}_seed_{seed}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker-segflow", str(results), "--seed", str(seed)]
    command += ["--epochs", str(args.epochs), "--iterations", str(args.iterations), "--plans", str(plans)]
    command += ["--val-iterations", str(args.val_iterations), "--device", args.device, "--threads", str(args.threads)]
    started = time.perf_counter()
    result = subprocess.run([*command, "--augment-on", augment_on, "--work", str(out)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"segflow training failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    return {
        "wall_s": wall,
        "pseudo_dice": [e["mean_fg_dice"] for e in log],
        "train_loss": [e["train_loss"] for e in log],
        "ema_pseudo_dice": log[-1]["ema_fg_dice"],
    }


def worker_segflow(args) -> None:
    sys.path.insert(0, str(REPO))
    from segflow.train.loop import train
    from segflow.train.settings import TrainSettings

    results = args.worker_segflow
    settings = TrainSettings(
        epochs=args.epochs,
        iterations_per_epoch=args.iterations,
        val_iterations=args.val_iterations,
        seed=args.seed,
        augment_on=args.augment_on[0],
    )
    train(
        args.plans or results / "plans.json",
        results / "raw" / "dataset.json",
        results / "splits.json",
        results / "preprocessed",
        CONFIGURATION,
        0,
        args.work,
        settings,
        device=args.device,
        threads=args.threads,
    )


# --- the record of runs: kept after every run, so a comparison can be continued -----------------------------


def setup_of(args) -> dict:
    """What makes two runs comparable; a record made with another setup is not reused."""
    return {
        "configuration": CONFIGURATION,
        "epochs": args.epochs,
        "iterations": args.iterations,
        "val_iterations": args.val_iterations,
        "width_divisor": args.width_divisor,
        "device": args.device,
    }


def load_record(path: Path | None, setup: dict) -> dict:
    if path is None or not path.is_file():
        return {"setup": setup, "runs": {}}
    record = json.loads(path.read_text())
    if record.get("setup") != setup:
        raise SystemExit(f"{path} holds runs of another setup ({record.get('setup')}); give another --json")
    return record


def save_record(path: Path | None, record: dict) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def run_key(framework: str, seed: int) -> str:
    return f"{framework}/seed_{seed}"


def runs_of(record: dict, framework: str) -> list[dict]:
    return [run for key, run in sorted(record["runs"].items()) if key.startswith(framework + "/")]


# --- the report ----------------------------------------------------------------------------------------------


def loss_band(nnunet_runs: list[dict], other: list[dict]) -> list[dict]:
    """Per epoch: the range of nnunetv2's runs' training loss and the mean of ``other``'s."""
    epochs = min(len(r["train_loss"]) for r in [*nnunet_runs, *other])
    rows = []
    for e in range(epochs):
        band = [r["train_loss"][e] for r in nnunet_runs]
        mean = statistics.mean(r["train_loss"][e] for r in other)
        rows.append({"epoch": e, "low": min(band), "high": max(band), "mean": mean})
    return rows


def summarise(name: str, runs: list[dict]) -> str:
    emas = [r["ema_pseudo_dice"] for r in runs]
    spread = f" (runs: {', '.join(f'{e:.4f}' for e in emas)})" if len(emas) > 1 else ""
    walls = statistics.median(r["wall_s"] for r in runs)
    lines = [f"   {name:<17} EMA pseudo Dice {statistics.mean(emas):.4f}{spread}; median {walls:.0f} s per run"]
    for run in runs:
        lines.append(f"   {'':<17} seed {run['seed']}: train loss " + ", ".join(f"{v:.3f}" for v in run["train_loss"]))
    return "\n".join(lines)


def report(record: dict, frameworks: list[str]) -> str:
    setup = record["setup"]
    budget = (
        f"{setup['epochs']} epochs x {setup['iterations']} iterations, {setup['val_iterations']} validation iterations"
    )
    width = f", features / {setup['width_divisor']}" if setup["width_divisor"] != 1 else ""
    lines = [f"== Hippocampus fold 0, {CONFIGURATION}{width}, {budget}, {setup['device']}"]
    present = [f for f in frameworks if runs_of(record, f)]
    for framework in present:
        lines.append(summarise(f"{framework}:", runs_of(record, framework)))
    nnunet = runs_of(record, NNUNET)
    for framework in (f for f in present if f != NNUNET and nnunet):
        runs = runs_of(record, framework)
        gap = statistics.mean(r["ema_pseudo_dice"] for r in runs) - statistics.mean(
            r["ema_pseudo_dice"] for r in nnunet
        )
        band = loss_band(nnunet, runs)[1:]
        above = [row["epoch"] for row in band if row["mean"] > row["high"]]
        below = [row["epoch"] for row in band if row["mean"] < row["low"]]
        where = "inside nnunetv2's range at every epoch after the first"
        if above or below:
            where = f"above nnunetv2's range (slower) at epochs {above}, below it (faster) at epochs {below}"
        lines.append(f"   {framework} - nnunetv2: mean EMA {gap:+.4f}; mean training loss {where}")
    return "\n".join(lines)


TABLE_EPOCHS = (0, 10, 15, 20, 30, 40, 50, 60, 79)
NAMES = {
    NNUNET: ("nnunetv2", "nnunetv2"),
    "segflow-device": ("segflow, `augment_on: device`", "segflow, device"),
    "segflow-workers": ("segflow, `augment_on: workers`", "segflow, workers"),
}


def running_ema(values, alpha: float = 0.9) -> list[float]:
    """The EMA after every epoch (``ema``'s, epoch by epoch)."""
    return [ema(values[: i + 1], alpha) for i in range(len(values))]


def markdown_table(record: dict) -> str:
    """The README's table of a record: per run, its final EMA pseudo Dice and wall time, and the training loss
    and EMA pseudo Dice at ``TABLE_EPOCHS``."""
    epochs = [e for e in TABLE_EPOCHS if e < record["setup"]["epochs"]]
    runs = sorted(record["runs"].items(), key=lambda item: (list(NAMES).index(item[0].split("/")[0]), item[1]["seed"]))
    lines = [
        "| run (seed) | final EMA pseudo Dice | wall s | "
        + " | ".join(f"epoch {e}" if i == 0 else str(e) for i, e in enumerate(epochs))
        + " |",
        "|" + "---|" * (3 + len(epochs)),
    ]
    for key, run in runs:
        name = f"{NAMES[key.split('/')[0]][0]} ({run['seed']})"
        losses = " | ".join(f"{run['train_loss'][e]:.3f}" for e in epochs)
        wall = f"{run['wall_s']:,.0f}".replace(",", " ")
        lines.append(f"| {name}, training loss | **{run['ema_pseudo_dice']:.3f}** | {wall} | {losses} |")
    for key, run in runs:
        name = f"{NAMES[key.split('/')[0]][1]} ({run['seed']})"
        curve = running_ema(run["pseudo_dice"])
        lines.append(f"| {name}, EMA pseudo Dice | | | " + " | ".join(f"{curve[e]:.3f}" for e in epochs) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hippocampus", type=Path, default=hippocampus_default())
    parser.add_argument("--segflow-results", type=Path, help="segflow's preprocessed results; skips its workflow")
    parser.add_argument("--nnunet-python", default=os.environ.get("NNUNET_PYTHON", "/opt/nnunet-venv/bin/python"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--val-iterations", type=int, default=5)
    parser.add_argument("--width-divisor", type=int, default=1, help="both frameworks: features per stage / K")
    parser.add_argument("--repeats", type=int, default=1, help="runs per framework, seeds 0 .. N-1")
    parser.add_argument(
        "--augment-on", nargs="+", choices=("device", "workers"), default=["device"], help="segflow: where it augments"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--max-runs", type=int, help="train at most N of the pending runs (seed by seed), then report")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="segflow: threads (augmentation workers follow)")
    parser.add_argument("--workers", type=int, default=2, help="nnunetv2: augmentation workers")
    parser.add_argument("--nnunet-threads", type=int, help="nnunetv2: torch threads (default: its own, all cores)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segflow-bench-train-quality"))
    parser.add_argument("--json", type=Path, help="every run's curves; runs already in it are not trained again")
    parser.add_argument("--worker-segflow", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-export", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--plans", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--markdown", action="store_true", help="print --json's runs as the README's table; no training"
    )
    add_segflow_only(parser)
    args = parser.parse_args()
    if args.markdown:
        record = json.loads(args.json.read_text())
        frameworks = list(dict.fromkeys(key.split("/")[0] for key in record["runs"]))
        print(markdown_table(record))
        print(report(record, frameworks))
        return
    if args.worker_segflow:
        return worker_segflow(args)
    if args.worker_export:
        return export_for_nnunet(args.worker_export, args.plans, args.work / NNUNET)
    args.hippocampus = args.hippocampus.resolve()
    results = preprocessed_hippocampus(args.hippocampus, args.work, args.segflow_results)
    plans = write_plans(results, args.work, args.width_divisor)
    record = load_record(args.json, setup_of(args))
    segflow = [f"segflow-{where}" for where in args.augment_on]
    frameworks = segflow if args.segflow_only else [NNUNET, *segflow]
    missing = lambda framework, seed: run_key(framework, seed) not in record["runs"]  # noqa: E731
    if not args.segflow_only and any(missing(NNUNET, seed) for seed in range(args.repeats)):
        export = [args.nnunet_python, str(Path(__file__).resolve()), "--worker-export", str(results)]
        subprocess.run([*export, "--plans", str(plans), "--work", str(args.work)], check=True)

    lock = threading.Lock()

    def train_and_keep(framework: str, seed: int) -> None:
        if framework == NNUNET:
            run = run_nnunet(args, args.work / NNUNET, seed)
        else:
            run = run_segflow(args, results, plans, seed, framework.split("-", 1)[1])
        with lock:
            record["runs"][run_key(framework, seed)] = {"seed": seed, **run}
            save_record(args.json, record)

    pending = [(f, seed) for seed in range(args.repeats) for f in frameworks if missing(f, seed)]
    pending = pending[: args.max_runs]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(train_and_keep, *p) for p in pending]:
            future.result()
    print(report(record, frameworks))
    if args.json is None:
        return
    emas = {f: [r["ema_pseudo_dice"] for r in runs_of(record, f)] for f in frameworks}
    record["summary"] = {f: {"mean_ema_pseudo_dice": statistics.mean(v)} for f, v in emas.items() if v}
    save_record(args.json, record)


if __name__ == "__main__":
    main()
