"""Benchmark: nnU-Net v2's models in segflow, and segflow's models in nnU-Net v2, on MSD Hippocampus 3d_fullres.

1. nnunetv2 2.8.1 (its own venv) converts, plans and preprocesses the task and trains 3d_fullres folds 0 and 1
   with a short budget; ``nnUNetv2_predict_from_modelfolder`` and ``segflow predict -m`` on that model folder
   segment the same test images.
2. segflow's workflow trains 3d_fullres folds 0 and 1 with the same budget; ``segflow export-nnunet`` writes them
   as an nnU-Net model folder; ``nnUNetv2_predict_from_modelfolder`` and ``segflow predict -m`` on the export
   segment the same images.
For each direction: Dice between the two frameworks' label maps per label and per case (the target is >= 0.999
on every case: they differ only in float16 against float32 tile accumulation), the count of cases whose maps are
identical voxel for voxel, the largest difference of their probabilities, the foreground voxels predicted (with
none, the Dice says nothing), and each command's seconds per case.

Usage (this 2-core machine, about an hour: 300 iterations per fold, enough for foreground to appear):
    python bench/interop.py [--epochs 10 --iterations 30 --cases 10] [--json FILE]
Without nnunetv2 (segflow's export read back by segflow; CI's smoke test on a tiny task):
    python bench/interop.py --segflow-only --hippocampus TASK --epochs 1 --iterations 2 --cases 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from benchlib import (
    REPO,
    add_segflow_only,
    budget_config,
    hippocampus_default,
    msd_test_images,
    nnunet_budget_trainer,
    nnunet_env,
    snakemake_command,
    timed,
)

CONFIGURATION = "3d_fullres"
FOLDS = (0, 1)
NNUNET_TRAINER = "nnUNetTrainerSegflowInterop"


def agreement_per_case(cases, first: Path, second: Path, labels) -> dict:
    """Per case: Dice between two folders' label maps per label (1.0 where both lack the label), whether the maps
    are identical, the foreground voxels of the first, and the largest difference of their probabilities."""
    import numpy as np
    import SimpleITK as sitk

    figures = {}
    for case in cases:
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(f / f"{case}.nii.gz"))) for f in (first, second))
        dice = {}
        for label in labels:
            total = int(np.sum(a == label) + np.sum(b == label))
            dice[label] = 2 * int(np.sum((a == label) & (b == label))) / total if total else 1.0
        with np.load(first / f"{case}.npz") as p, np.load(second / f"{case}.npz") as q:
            difference = float(np.abs(p["probabilities"] - q["probabilities"]).max())
        figures[case] = {
            "dice": dice,
            "identical": bool(np.array_equal(a, b)),
            "foreground_voxels": int(np.sum(a > 0)),
            "max_probability_difference": difference,
        }
    return figures


def segflow_predict(images: Path, out: Path, model: Path, device: str, *options: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "segflow.cli", "predict", "-i", str(images), "-o", str(out)]
    return timed([*command, "-m", str(model), "--device", device, "--save-probabilities", *options])


def nnunet_predict(args, images: Path, out: Path, model: Path, env: dict) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [str(args.nnunet_venv / "bin" / "nnUNetv2_predict_from_modelfolder"), "-i", str(images), "-o", str(out)]
    command += ["-m", str(model), "-f", *map(str, FOLDS), "-device", args.device, "-npp", "1", "-nps", "1"]
    return timed([*command, "--save_probabilities", "--disable_progress_bar"], env)


def nnunet_model(args, env: dict) -> Path:
    """nnunetv2's own model: convert, plan and preprocess 3d_fullres, train folds 0 and 1 with the budget."""
    tool = args.nnunet_venv / "bin"
    for folder in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # a former run's dataset 4 is in the way
        shutil.rmtree(env[folder], ignore_errors=True)
    trainers = args.work / "nnunet_trainers"
    trainers.mkdir(parents=True, exist_ok=True)
    source = nnunet_budget_trainer(NNUNET_TRAINER, args.epochs, args.iterations, args.val_iterations, False)
    (trainers / "interop_trainer.py").write_text(source)
    timed([str(tool / "nnUNetv2_convert_MSD_dataset"), "-i", str(args.hippocampus), "-np", "2"], env)
    timed([str(tool / "nnUNetv2_plan_and_preprocess"), "-d", "4", "-c", CONFIGURATION, "-np", "2", "-npfp", "2"], env)
    for fold in FOLDS:
        timed(
            [
                str(tool / "nnUNetv2_train"),
                "4",
                CONFIGURATION,
                str(fold),
                "-tr",
                NNUNET_TRAINER,
                "-device",
                args.device,
            ],
            env,
        )
    return Path(env["nnUNet_results"]) / "Dataset004_Hippocampus" / f"{NNUNET_TRAINER}__nnUNetPlans__{CONFIGURATION}"


def segflow_model(args) -> Path:
    """segflow's workflow up to the two folds' checkpoints, with the same budget; its results folder."""
    workdir = args.work / "segflow"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    threads = {"threads": args.train_threads} if args.train_threads else {}
    config = budget_config(args, CONFIGURATION, FOLDS, **threads)
    (args.work / "segflow_config.json").write_text(json.dumps(config))
    results = workdir / "results" / args.hippocampus.name
    folds = [
        results.relative_to(workdir) / "train" / CONFIGURATION / f"fold_{f}" / "checkpoint_final.pt" for f in FOLDS
    ]
    command = snakemake_command(workdir, targets=folds) + ["--configfile", str(args.work / "segflow_config.json")]
    timed(command)
    shutil.copy(results / "raw" / "dataset.json", results / "dataset.json")  # the select rule would put it there
    return results


def export(results: Path, destination: Path) -> Path:
    shutil.rmtree(destination, ignore_errors=True)
    timed(
        [
            sys.executable,
            "-m",
            "segflow.cli",
            "export-nnunet",
            "-m",
            str(results),
            "-o",
            str(destination),
            "-c",
            CONFIGURATION,
        ]
    )
    return destination / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}"


def direction(name: str, cases, outputs: dict, seconds: dict) -> dict:
    """Figures of one direction: agreement per case and label, the worst of it, seconds per case."""
    labels = (1, 2)
    per_case = agreement_per_case(cases, *outputs.values(), labels)
    worst = {label: min(c["dice"][label] for c in per_case.values()) for label in labels}
    identical = sum(c["identical"] for c in per_case.values())
    foreground = sum(c["foreground_voxels"] for c in per_case.values())
    difference = max(c["max_probability_difference"] for c in per_case.values())
    print(f"== {name}: {len(cases)} Hippocampus test images, {CONFIGURATION}, folds {FOLDS}, mirroring on")
    for framework, s in seconds.items():
        print(f"   {framework:<9} {s / len(cases):.2f} s per case (whole command)")
    print(f"   lowest Dice between them over cases: label 1 {worst[1]:.5f}, label 2 {worst[2]:.5f} (target >= 0.999)")
    print(
        f"   identical label maps: {identical} of {len(cases)} cases; largest probability difference {difference:.5f}"
    )
    print(f"   foreground voxels predicted: {foreground}")
    if not foreground:
        print("   (no foreground: the Dice agreement says nothing; train longer with --epochs / --iterations)")
    summary = {"lowest_dice": worst, "identical_cases": identical, "max_probability_difference": difference}
    return {"per_case": per_case, **summary, "foreground_voxels": foreground, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hippocampus", type=Path, default=hippocampus_default())
    parser.add_argument("--nnunet-venv", type=Path, default=Path(os.environ.get("NNUNET_VENV", "/opt/nnunet-venv")))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--val-iterations", type=int, default=2)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument(
        "--train-threads",
        type=int,
        help="segflow's threads per training job (default: its config's; 1 trains the folds side by side)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segflow-bench-interop"))
    parser.add_argument("--json", type=Path)
    add_segflow_only(parser)
    args = parser.parse_args()
    args.hippocampus, args.work = args.hippocampus.resolve(), args.work.resolve()
    args.dataset = args.hippocampus
    if not args.segflow_only and not (args.nnunet_venv / "bin" / "nnUNetv2_train").exists():
        raise SystemExit(f"no nnunetv2 in {args.nnunet_venv}; install it (../shared/reference/anchor-nnunetv2.md)")
    sys.path.insert(0, str(REPO))
    images = args.work / "images"
    cases = msd_test_images(args.hippocampus, images, args.cases)
    figures = {}
    results = segflow_model(args)
    exported = export(results, args.work / "exported")
    seconds = {"segflow": segflow_predict(images, args.work / "export_segflow", exported, args.device)}
    if args.segflow_only:  # segflow's export against segflow's own results folder
        options = ("-c", CONFIGURATION, "--no-postprocessing")
        seconds["results"] = segflow_predict(images, args.work / "export_results", results, args.device, *options)
        outputs = {"segflow": args.work / "export_segflow", "results": args.work / "export_results"}
        figures["export"] = direction("segflow's export against its results folder", cases, outputs, seconds)
    else:
        trainers = str(args.work / "nnunet_trainers")
        env = nnunet_env(args.work / "nnunet", args.nnunet_venv, nnUNet_extTrainer=trainers, nnUNet_n_proc_DA="1")
        seconds["nnunetv2"] = nnunet_predict(args, images, args.work / "export_nnunet", exported, env)
        outputs = {"nnunetv2": args.work / "export_nnunet", "segflow": args.work / "export_segflow"}
        figures["segflow_to_nnunet"] = direction("segflow's model exported, in both", cases, outputs, seconds)
        model = nnunet_model(args, env)
        seconds = {"nnunetv2": nnunet_predict(args, images, args.work / "nnunet_nnunet", model, env)}
        seconds["segflow"] = segflow_predict(images, args.work / "nnunet_segflow", model, args.device)
        outputs = {"nnunetv2": args.work / "nnunet_nnunet", "segflow": args.work / "nnunet_segflow"}
        figures["nnunet_to_segflow"] = direction("nnunetv2's model, in both", cases, outputs, seconds)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
