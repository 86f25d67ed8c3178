"""Benchmark: training quality of segflow vs nnunetv2 2.8.1 on MSD Hippocampus, fold 0, 3d_fullres, with the
same reduced budget (epochs x iterations, validation iterations) for both.

Reported: the final EMA pseudo Dice of each (nnU-Net's definition: global TP/FP/FN over the validation
batches of an epoch, mean over foreground labels, exponential moving average 0.9), and the wall time.
nnunetv2's value is recomputed from the per-epoch pseudo Dice its training log prints, so no pickle is read.

Usage: python bench/train_quality.py [--epochs 8 --iterations 20 --val-iterations 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from benchlib import REPO, nnunet_env, snakemake_command

TRAINER_MODULE = """
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerSegflowBudget(nnUNetTrainer):
    # nnunetv2 reads its trainer's explicit signature (it records the init arguments), so no *args here.
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = {epochs}
        self.num_iterations_per_epoch = {iterations}
        self.num_val_iterations_per_epoch = {val_iterations}
"""


def ema(values, alpha: float = 0.9) -> float:
    smoothed = None
    for value in values:
        smoothed = value if smoothed is None else alpha * smoothed + (1 - alpha) * value
    return smoothed


def nnunet_pseudo_dice(log_text: str) -> list[float]:
    """Mean foreground pseudo Dice per epoch from nnunetv2's training log ("Pseudo dice [..]" lines)."""
    means = []
    for match in re.finditer(r"Pseudo dice \[(.*?)\]", log_text):
        values = [float(v) for v in re.findall(r"[-+]?\d*\.\d+(?:e[-+]?\d+)?|nan", match.group(1))]
        finite = [v for v in values if v == v]
        means.append(sum(finite) / len(finite) if finite else 0.0)
    return means


def run_nnunet(args, base: Path) -> dict:
    env = nnunet_env(base, nnUNet_n_proc_DA=str(args.workers), nnUNet_extTrainer=str(base / "trainers"))
    venv_bin = Path(args.nnunet_venv) / "bin"
    (base / "raw").mkdir(parents=True, exist_ok=True)
    (base / "trainers").mkdir(parents=True, exist_ok=True)
    (base / "trainers" / "segflow_budget.py").write_text(
        TRAINER_MODULE.format(epochs=args.epochs, iterations=args.iterations, val_iterations=args.val_iterations)
    )
    if not (base / "preprocessed" / "Dataset004_Hippocampus" / "nnUNetPlans_3d_fullres").is_dir():
        subprocess.run(
            [str(venv_bin / "nnUNetv2_convert_MSD_dataset"), "-i", str(args.hippocampus), "-np", "2"],
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [str(venv_bin / "nnUNetv2_plan_and_preprocess"), "-d", "4", "-np", "2", "-c", "3d_fullres"],
            env=env,
            check=True,
            capture_output=True,
        )
    shutil.rmtree(base / "results", ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        [
            str(venv_bin / "nnUNetv2_train"),
            "4",
            "3d_fullres",
            "0",
            "-tr",
            "nnUNetTrainerSegflowBudget",
            "-device",
            args.device,
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    logs = sorted((base / "results").rglob("training_log_*.txt"))
    dice = nnunet_pseudo_dice(logs[-1].read_text())
    return {"wall_s": wall, "pseudo_dice": dice, "ema_pseudo_dice": ema(dice)}


def run_segflow(args, work: Path) -> dict:
    workdir = work / "segflow"
    results = workdir / "results" / args.hippocampus.name
    command = snakemake_command(workdir, f"dataset={args.hippocampus}", "folds=[]", "configurations=[3d_fullres]")
    subprocess.run(command, check=True, capture_output=True)
    from segflow.train.loop import TrainSettings, train

    out = workdir / "train"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    train(
        results / "plans.json",
        results / "raw" / "dataset.json",
        results / "splits.json",
        results / "preprocessed",
        "3d_fullres",
        0,
        out,
        TrainSettings(
            epochs=args.epochs, iterations_per_epoch=args.iterations, val_iterations=args.val_iterations, seed=0
        ),
        device=args.device,
        threads=args.threads,
    )
    wall = time.perf_counter() - started
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    return {"wall_s": wall, "pseudo_dice": [e["mean_fg_dice"] for e in log], "ema_pseudo_dice": log[-1]["ema_fg_dice"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--hippocampus",
        type=Path,
        default=Path(os.environ.get("SEGFLOW_HIPPOCAMPUS", REPO.parent / "shared" / "data" / "Task04_Hippocampus")),
    )
    parser.add_argument("--nnunet-venv", default=os.environ.get("NNUNET_VENV", "/opt/nnunet-venv"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--val-iterations", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/segflow-bench-train-quality"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.hippocampus = args.hippocampus.resolve()
    nn = run_nnunet(args, args.work / "nnunetv2")
    sf = run_segflow(args, args.work)
    budget = f"{args.epochs} epochs x {args.iterations} iterations, {args.val_iterations} validation iterations"
    print(f"== Hippocampus fold 0, 3d_fullres, {budget}, {args.device}")
    print(f"   nnunetv2 2.8.1: EMA pseudo Dice {nn['ema_pseudo_dice']:.4f}  ({nn['wall_s']:.0f} s)")
    print(f"   segflow:        EMA pseudo Dice {sf['ema_pseudo_dice']:.4f}  ({sf['wall_s']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"nnunetv2": nn, "segflow": sf, "budget": budget}, indent=2))


if __name__ == "__main__":
    main()
