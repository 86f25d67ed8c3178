"""Benchmark: segflow against nnunetv2 2.8.1 end to end on one dataset, each with its own commands, the same
reduced training budget, the same threads and the same torch build, one after the other. Prints one table.

Stages, per framework:
1. preprocessing, from the MSD Task folder to preprocessed 3d_fullres arrays: segflow's workflow
   (convert ... preprocess) against ``nnUNetv2_convert_MSD_dataset`` + ``nnUNetv2_plan_and_preprocess``;
   wall time and peak RSS of the process tree (sampled every 50 ms);
2. training of fold 0 (3d_fullres) with the budget, then the full-case validation of that fold (mirroring
   on): segflow's ``train`` and ``validate`` jobs against ``nnUNetv2_train`` with a trainer subclass that only
   sets the budget. Seconds per training iteration = median epoch time / iterations per epoch (an epoch's
   validation iterations included, for both). Dice per label from each framework's validation summary;
   both draw the same fold-0 split (checked);
3. prediction of ``--cases`` test images with the fold-0 model, mirroring on, no postprocessing:
   ``segflow predict`` against ``nnUNetv2_predict``; whole command / cases.

Threads: segflow trains with ``train.threads`` = ``--threads`` (torch threads) and its augmentation worker
count; nnunetv2 gets the same worker count (``nnUNet_n_proc_DA``) and sets torch to all cores on a CPU
(``--threads`` should be the machine's cores there). torch.compile stays off for nnunetv2.

Usage (this 2-core machine, about 40 minutes):
    bench/compare [--epochs 6 --iterations 15 --val-iterations 3 --cases 10] [--json FILE]
Without nnunetv2 (segflow's column alone; CI's smoke test, on the demo's tiny task):
    bench/compare --segflow-only --dataset TASK_FOLDER --epochs 1 --iterations 2 --val-iterations 1 --cases 1
On a GPU machine (both frameworks installed, see README "Benchmarks"):
    bench/compare --device cuda --threads 12 --epochs 50 --iterations 250 --cases 130
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

from benchlib import (
    REPO,
    add_segflow_only,
    budget_config,
    hippocampus_default,
    measure,
    msd_test_images,
    nnunet_budget_trainer,
    nnunet_env,
    nnunet_log_numbers,
    snakemake_command,
)

CONFIGURATION = "3d_fullres"
NNUNET_TRAINER = "nnUNetTrainerSegflowCompare"


def augmentation_workers(threads: int, device: str) -> int:
    """nnunetv2's augmentation workers: as many as segflow's loader workers."""
    sys.path.insert(0, str(REPO))
    import torch

    from segflow.train.loop import workers_for

    return workers_for(threads, torch.device(device))


# --- segflow ---------------------------------------------------------------------------------------------


def segflow_config(args, folds: list[int]) -> Path:
    config = budget_config(args, CONFIGURATION, folds, threads=args.threads)
    config["inference"] = {"mirror": True, "threads": args.threads}
    path = args.work / f"segflow_config_folds{len(folds)}.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def run_segflow(args) -> dict:
    workdir = args.work / "segflow"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    results = workdir / "results" / args.dataset.name
    preprocess = snakemake_command(workdir, cores=args.threads, targets=["preprocessing"])
    preprocess += ["--configfile", str(segflow_config(args, []))]
    figures = {"preprocess": measure(preprocess, log=args.work / "segflow_preprocess.log")}
    fold = results.relative_to(workdir) / "train" / CONFIGURATION / "fold_0"
    train = snakemake_command(workdir, cores=args.threads, targets=[fold / "validation"])
    train += ["--configfile", str(segflow_config(args, [0]))]
    figures["train_and_validate"] = measure(train, log=args.work / "segflow_train.log")
    figures.update(segflow_outcome(results))
    # The select rule puts dataset.json into the model folder; this run stops before it.
    shutil.copy(results / "raw" / "dataset.json", results / "dataset.json")
    out = args.work / "segflow_predictions"
    shutil.rmtree(out, ignore_errors=True)
    predict = [sys.executable, "-m", "segflow.cli", "predict", "-i", str(args.work / "images"), "-o", str(out)]
    predict += ["-m", str(results), "-c", CONFIGURATION, "-f", "0", "--device", args.device, "--no-postprocessing"]
    figures["predict"] = measure(predict, log=args.work / "segflow_predict.log")
    return figures


def segflow_outcome(results: Path) -> dict:
    """Epoch times, the fold-0 validation summary and its cases, from segflow's files."""
    fold = results / "train" / CONFIGURATION / "fold_0"
    log = [json.loads(line) for line in (fold / "training_log.jsonl").read_text().splitlines()]
    return {
        "epoch_seconds": [e["epoch_seconds"] for e in log],
        "train_loss": [e["train_loss"] for e in log],
        "val_loss": [e["val_loss"] for e in log],
        "validation": json.loads((fold / "validation" / "summary.json").read_text()),
        "fold0_val": json.loads((results / "splits.json").read_text())[0]["val"],
    }


# --- nnunetv2 --------------------------------------------------------------------------------------------


def run_nnunet(args) -> dict:
    base = args.work / "nnunetv2"
    shutil.rmtree(base, ignore_errors=True)
    (base / "raw").mkdir(parents=True)
    trainers = base / "trainers"
    trainers.mkdir()
    budget = {"epochs": args.epochs, "iterations": args.iterations, "val_iterations": args.val_iterations}
    (trainers / "segflow_compare.py").write_text(nnunet_budget_trainer(NNUNET_TRAINER, **budget, validate=True))
    workers = augmentation_workers(args.threads, args.device)
    env = nnunet_env(
        base,
        args.nnunet_venv,
        nnUNet_extTrainer=str(trainers),
        nnUNet_n_proc_DA=str(workers),
        nnUNet_def_n_proc=str(args.threads),
    )
    tool = args.nnunet_venv / "bin"
    convert = [str(tool / "nnUNetv2_convert_MSD_dataset"), "-i", str(args.dataset), "-np", str(args.threads)]
    convert_figures = measure(convert, env=env, log=args.work / "nnunet_convert.log")
    dataset_id = next((base / "raw").iterdir()).name[len("Dataset") :][:3]
    plan = [str(tool / "nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c", CONFIGURATION]
    plan += ["-np", str(args.threads), "-npfp", str(args.threads)]
    plan_figures = measure(plan, env=env, log=args.work / "nnunet_plan_and_preprocess.log")
    figures = {"preprocess": combined(convert_figures, plan_figures)}
    train = [str(tool / "nnUNetv2_train"), dataset_id, CONFIGURATION, "0", "-tr", NNUNET_TRAINER]
    figures["train_and_validate"] = measure(
        [*train, "-device", args.device], env=env, log=args.work / "nnunet_train.log"
    )
    figures.update(nnunet_outcome(base))
    out = args.work / "nnunet_predictions"
    shutil.rmtree(out, ignore_errors=True)
    predict = [str(tool / "nnUNetv2_predict"), "-i", str(args.work / "images"), "-o", str(out), "-d", dataset_id]
    predict += ["-c", CONFIGURATION, "-f", "0", "-tr", NNUNET_TRAINER, "-npp", "1", "-nps", "1"]
    predict += ["-device", args.device, "--disable_progress_bar"]
    figures["predict"] = measure(predict, env=env, log=args.work / "nnunet_predict.log")
    return figures


def nnunet_outcome(base: Path) -> dict:
    """Epoch times (from its training log), the fold-0 validation summary and its cases, from nnunetv2's
    files."""
    fold = next((base / "results").glob(f"*/{NNUNET_TRAINER}__nnUNetPlans__{CONFIGURATION}")) / "fold_0"
    log = sorted(fold.glob("training_log_*.txt"))[-1].read_text()
    splits = next((base / "preprocessed").glob("*/splits_final.json"))
    return {
        "epoch_seconds": nnunet_log_numbers(log, "Epoch time:"),
        "train_loss": nnunet_log_numbers(log, "train_loss"),
        "val_loss": nnunet_log_numbers(log, "val_loss"),
        "validation": json.loads((fold / "validation" / "summary.json").read_text()),
        "fold0_val": json.loads(splits.read_text())[0]["val"],
    }


def combined(first: dict, second: dict) -> dict:
    """Two commands run one after the other: their times add up, the peak is the larger one."""
    return {
        "wall_s": first["wall_s"] + second["wall_s"],
        **{k: max(first[k], second[k]) for k in ("peak_tree_gb", "peak_largest_gb")},
    }


# --- the table -------------------------------------------------------------------------------------------


def rows(nn: dict | None, sf: dict, cases: int, iterations: int, labels: dict) -> list[tuple]:
    """(measure, nnunetv2's value or None, segflow's value, format) per line of the table."""

    def per_iteration(figures):
        return statistics.median(figures["epoch_seconds"]) / iterations

    measures = [
        ("preprocessing wall time (s)", lambda f: f["preprocess"]["wall_s"], "{:.1f}"),
        ("preprocessing peak RSS, process tree (GB)", lambda f: f["preprocess"]["peak_tree_gb"], "{:.2f}"),
        ("training, seconds per iteration", per_iteration, "{:.2f}"),
        ("training + fold-0 validation wall time (s)", lambda f: f["train_and_validate"]["wall_s"], "{:.0f}"),
        ("prediction, seconds per case", lambda f: f["predict"]["wall_s"] / cases, "{:.2f}"),
    ]
    for label, name in labels.items():
        measures.append(
            (f"fold-0 validation Dice, {name}", lambda f, label=label: f["validation"]["mean"][label]["Dice"], "{:.4f}")
        )
    measures.append(
        ("fold-0 validation Dice, foreground mean", lambda f: f["validation"]["foreground_mean"]["Dice"], "{:.4f}")
    )
    return [(name, None if nn is None else value(nn), value(sf), form) for name, value, form in measures]


def print_table(table) -> None:
    print("| measure | nnunetv2 2.8.1 | segflow | segflow / nnunetv2 |")
    print("|---|---|---|---|")
    for name, nn, sf, form in table:
        ratio = f"{sf / nn:.2f}" if nn else "n/a"
        print(f"| {name} | {'not run' if nn is None else form.format(nn)} | {form.format(sf)} | {ratio} |")


def foreground_labels(dataset: Path) -> dict[str, str]:
    """label value -> name, from an MSD ("0": "background") or nnU-Net v2 ("background": 0) dataset.json."""
    labels = json.loads((dataset / "dataset.json").read_text())["labels"]
    pairs = labels.items() if all(k.isdigit() for k in labels) else ((str(v), k) for k, v in labels.items())
    return {value: name for value, name in sorted(pairs, key=lambda p: int(p[0])) if value != "0"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=hippocampus_default(), help="an MSD Task folder")
    parser.add_argument("--nnunet-venv", type=Path, default=Path(os.environ.get("NNUNET_VENV", "/opt/nnunet-venv")))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--val-iterations", type=int, default=3)
    parser.add_argument("--cases", type=int, default=10, help="test images to predict")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segflow-bench-compare"))
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    add_segflow_only(parser)
    args = parser.parse_args()
    if not args.segflow_only and not (args.nnunet_venv / "bin" / "nnUNetv2_train").exists():
        raise SystemExit(f"no nnunetv2 in {args.nnunet_venv}; install it (../shared/reference/anchor-nnunetv2.md)")
    args.dataset, args.work = args.dataset.resolve(), args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    cases = len(msd_test_images(args.dataset, args.work / "images", args.cases))
    nn = None if args.segflow_only else run_nnunet(args)
    sf = run_segflow(args)
    budget = f"{args.epochs} epochs x {args.iterations} iterations + {args.val_iterations} validation iterations"
    print(f"== {args.dataset.name}, {CONFIGURATION} fold 0, {budget}, {args.device}, {args.threads} threads")
    print_table(rows(nn, sf, cases, args.iterations, foreground_labels(args.dataset)))
    runs = [("segflow", sf)] if nn is None else [("nnunetv2", nn), ("segflow", sf)]
    for loss in ("train_loss", "val_loss"):
        per_epoch = "; ".join(f"{name} " + " ".join(f"{v:.3f}" for v in f[loss]) for name, f in runs)
        print(f"{loss} per epoch (Dice + CE): {per_epoch}")
    same_split = "not compared" if nn is None else sorted(nn["fold0_val"]) == sorted(sf["fold0_val"])
    print(f"fold-0 validation cases: {len(sf['fold0_val'])}, the same in both: {same_split}; predicted cases: {cases}")
    if args.json:
        args.json.write_text(json.dumps({"nnunetv2": nn, "segflow": sf, "budget": budget}, indent=1))


if __name__ == "__main__":
    main()
