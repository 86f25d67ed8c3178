"""Benchmark: training quality of segflow vs nnunetv2 2.8.1 on MSD Hippocampus, fold 0, 3d_fullres, with the
same reduced budget (epochs x iterations, validation iterations) for both.

Reported: the final EMA pseudo Dice of each run (nnU-Net's definition: global TP/FP/FN over the validation
batches of an epoch, mean over foreground labels, exponential moving average 0.9), the per-epoch training
loss, and the wall time. nnunetv2's values come from its training log, so no pickle is read.

Both frameworks train on the same preprocessed arrays: segflow's workflow preprocesses the dataset (its
arrays are bit-identical to nnunetv2's, see bench/preprocess.py), and nnunetv2 gets them in its own storage,
written by its own code. Neither runs the final full-case validation. ``--repeats N`` trains N times each
(segflow with seeds 0..N-1; nnunetv2 draws its own), since a reduced budget leaves a wide spread.

Usage (CPU here): python bench/train_quality.py [--epochs 8 --iterations 20 --val-iterations 5]
On a GPU machine, with segflow's preprocessed results carried there (no snakemake needed):
    python bench/train_quality.py --device cuda --nnunet-python python3 --segflow-results DIR --parallel ...
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


# --- data ------------------------------------------------------------------------------------------------


def export_for_nnunet(results: Path, base: Path) -> None:
    """nnunetv2's preprocessed folder made of segflow's arrays (runs in nnunetv2's Python)."""
    import numpy as np

    target = base / "preprocessed" / NNUNET_DATASET
    shutil.rmtree(target, ignore_errors=True)  # blosc2 does not overwrite a stored case
    folder = target / f"nnUNetPlans_{CONFIGURATION}"
    folder.mkdir(parents=True)
    plans = nnunet_plans(json.loads((results / "plans.json").read_text()), NNUNET_DATASET)
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


def run_nnunet(args, base: Path, repeat: int) -> dict:
    trainers = base / "trainers"
    trainers.mkdir(parents=True, exist_ok=True)
    # Full-case validation is left out: this benchmark compares the pseudo Dice of training.
    budget = {"epochs": args.epochs, "iterations": args.iterations, "val_iterations": args.val_iterations}
    trainer = nnunet_budget_trainer("nnUNetTrainerSegflowBudget", **budget, validate=False)
    (trainers / "segflow_budget.py").write_text(trainer)
    env = nnunet_env(base, nnUNet_n_proc_DA=str(args.workers), nnUNet_extTrainer=str(trainers))
    env["nnUNet_results"] = str(base / f"results_{repeat}")
    shutil.rmtree(env["nnUNet_results"], ignore_errors=True)
    entry = "from nnunetv2.run.run_training import run_training_entry; run_training_entry()"
    command = [args.nnunet_python, "-c", entry, "4", CONFIGURATION, "0", "-tr", "nnUNetTrainerSegflowBudget"]
    started = time.perf_counter()
    result = subprocess.run([*command, "-device", args.device], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"nnunetv2 training failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    log = sorted(Path(env["nnUNet_results"]).rglob("training_log_*.txt"))[-1].read_text()
    dice, losses = nnunet_log_values(log)
    return {"wall_s": wall, "pseudo_dice": dice, "train_loss": losses, "ema_pseudo_dice": ema(dice)}


def run_segflow(args, results: Path, seed: int) -> dict:
    """One segflow training in its own process (so runs can overlap with nnunetv2's)."""
    out = args.work / "segflow_train" / f"seed_{seed}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker-segflow", str(results), "--seed", str(seed)]
    command += ["--epochs", str(args.epochs), "--iterations", str(args.iterations)]
    command += ["--val-iterations", str(args.val_iterations), "--device", args.device, "--threads", str(args.threads)]
    started = time.perf_counter()
    result = subprocess.run([*command, "--work", str(out)], capture_output=True, text=True)
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
    from segflow.train.loop import TrainSettings, train

    results = args.worker_segflow
    settings = TrainSettings(
        epochs=args.epochs, iterations_per_epoch=args.iterations, val_iterations=args.val_iterations, seed=args.seed
    )
    train(
        results / "plans.json",
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


def in_background(function, *arguments) -> tuple[threading.Thread, list]:
    box: list = []
    thread = threading.Thread(target=lambda: box.append(function(*arguments)))
    thread.start()
    return thread, box


def summarise(name: str, runs: list[dict]) -> str:
    emas = [r["ema_pseudo_dice"] for r in runs]
    spread = f" (runs: {', '.join(f'{e:.4f}' for e in emas)})" if len(emas) > 1 else ""
    walls = statistics.median(r["wall_s"] for r in runs)
    line = f"   {name:<15} EMA pseudo Dice {statistics.mean(emas):.4f}{spread}; median {walls:.0f} s per run"
    losses = "   " + " " * 16 + "train loss per epoch: " + ", ".join(f"{v:.3f}" for v in runs[0]["train_loss"])
    return line + "\n" + losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hippocampus", type=Path, default=hippocampus_default())
    parser.add_argument("--segflow-results", type=Path, help="segflow's preprocessed results; skips its workflow")
    parser.add_argument("--nnunet-python", default=os.environ.get("NNUNET_PYTHON", "/opt/nnunet-venv/bin/python"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--val-iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--parallel", action="store_true", help="train nnunetv2 and segflow at the same time")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="segflow: threads (augmentation workers follow)")
    parser.add_argument("--workers", type=int, default=2, help="nnunetv2: augmentation workers")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segflow-bench-train-quality"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker-segflow", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-export", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    add_segflow_only(parser)
    args = parser.parse_args()
    if args.worker_segflow:
        return worker_segflow(args)
    if args.worker_export:
        return export_for_nnunet(args.worker_export, args.work / "nnunetv2")
    args.hippocampus = args.hippocampus.resolve()
    results = preprocessed_hippocampus(args.hippocampus, args.work, args.segflow_results)
    if not args.segflow_only:
        export = [args.nnunet_python, str(Path(__file__).resolve()), "--worker-export", str(results)]
        subprocess.run([*export, "--work", str(args.work)], check=True)
    base = args.work / "nnunetv2"
    nn, sf = [], []
    for repeat in range(args.repeats):
        if args.segflow_only:
            sf.append(run_segflow(args, results, repeat))
            continue
        if args.parallel:
            thread, box = in_background(run_nnunet, args, base, repeat)
            sf.append(run_segflow(args, results, repeat))
            thread.join()
            nn.extend(box)
        else:
            nn.append(run_nnunet(args, base, repeat))
            sf.append(run_segflow(args, results, repeat))
        if len(nn) < len(sf):
            raise SystemExit("nnunetv2 training failed (see above)")
    budget = f"{args.epochs} epochs x {args.iterations} iterations, {args.val_iterations} validation iterations"
    print(f"== Hippocampus fold 0, {CONFIGURATION}, {budget}, {args.device}, {args.repeats} run(s) each")
    if nn:
        print(summarise("nnunetv2 2.8.1:", nn))
    print(summarise("segflow:", sf))
    if args.json:
        args.json.write_text(json.dumps({"nnunetv2": nn, "segflow": sf, "budget": budget}, indent=2))


if __name__ == "__main__":
    main()
