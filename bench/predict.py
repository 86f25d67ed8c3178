"""Benchmark: seconds per predicted MSD Hippocampus case, segflow vs nnunetv2 2.8.1, with test-time mirroring,
the same plan (3d_fullres), the same fold count and the same weights.

Both predict the same test images (imagesTs) from raw files to written segmentations with their own
command: ``segflow predict`` and ``nnUNetv2_predict_from_modelfolder``, with ``-npp 1 -nps 1`` (one worker
process for preprocessing and one for export) and with its defaults (three each). The weights are segflow's,
trained briefly or freshly initialised (time does not depend on them), and exported for nnunetv2 with
``segflow export-nnunet``; so the two frameworks' segmentations should agree, and the benchmark prints how
well (Dice between them per label).

Usage: python bench/predict.py [--cases 10] [--folds 5] [--nnunet-python /opt/nnunet-venv/bin/python]
       python bench/predict.py --segflow-only --hippocampus TASK --cases 1 --folds 1   (segflow alone)
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
    hippocampus_default,
    msd_test_images,
    nnunet_env,
    preprocessed_hippocampus,
    timed,
)

CONFIGURATION = "3d_fullres"


def make_segflow_model(results: Path, model: Path, folds: int) -> None:
    """A segflow model folder with ``folds`` freshly initialised 3d_fullres folds (seeded)."""
    import torch

    sys.path.insert(0, str(REPO))
    from segflow.io import load_json, save_json
    from segflow.networks import build_network
    from segflow.plans import resolved_configuration

    shutil.rmtree(model, ignore_errors=True)
    model.mkdir(parents=True)
    plans = load_json(results / "plans.json")
    dataset_json = load_json(results / "raw" / "dataset.json")
    save_json(plans, model / "plans.json")
    save_json(dataset_json, model / "dataset.json")
    configuration = resolved_configuration(plans, CONFIGURATION)
    for fold in range(folds):
        torch.manual_seed(fold)
        network = build_network(configuration, len(dataset_json["channel_names"]), len(dataset_json["labels"]))
        folder = model / "train" / CONFIGURATION / f"fold_{fold}"
        folder.mkdir(parents=True)
        state = {"network_weights": network.state_dict(), "inference_allowed_mirroring_axes": [0, 1, 2]}
        torch.save(state, folder / "checkpoint_final.pt")
    selection = {"configurations": [CONFIGURATION], "folds": list(range(folds)), "postprocessing": []}
    save_json(selection, model / "selection.json")


def agreement(cases, first: Path, second: Path) -> dict:
    import numpy as np
    import SimpleITK as sitk

    dice = {}
    for label in (1, 2):
        tp = total = 0
        for case in cases:
            a = sitk.GetArrayFromImage(sitk.ReadImage(str(first / f"{case}.nii.gz"))) == label
            b = sitk.GetArrayFromImage(sitk.ReadImage(str(second / f"{case}.nii.gz"))) == label
            tp += int((a & b).sum())
            total += int(a.sum() + b.sum())
        dice[label] = 2 * tp / total if total else float("nan")
    identical = all(
        np.array_equal(
            sitk.GetArrayFromImage(sitk.ReadImage(str(first / f"{c}.nii.gz"))),
            sitk.GetArrayFromImage(sitk.ReadImage(str(second / f"{c}.nii.gz"))),
        )
        for c in cases
    )
    return {"dice_between": dice, "identical_cases": identical}


def compare_devices(args, segflow_model: Path) -> None:
    """segflow's prediction timed on one device, or on two (say the GPU and the CPU) and the two results
    compared."""
    images = args.work / "images"
    cases = msd_test_images(args.hippocampus, images, args.cases)
    figures = {}
    for device in args.devices:
        out = args.work / f"out_{device}"
        shutil.rmtree(out, ignore_errors=True)
        command = [sys.executable, "-m", "segflow.cli", "predict", "-i", str(images), "-o", str(out)]
        figures[device] = timed([*command, "-m", str(segflow_model), "--device", device]) / len(cases)
        print(f"   segflow on {device}: {figures[device]:.3f} s per case ({len(cases)} cases, whole command)")
    if len(args.devices) == 2:
        first, second = (args.work / f"out_{d}" for d in args.devices)
        figures.update(agreement(cases, first, second))
        print(f"   agreement {args.devices[0]} / {args.devices[1]}: Dice {figures['dice_between']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hippocampus", type=Path, default=hippocampus_default())
    parser.add_argument("--nnunet-python", default=os.environ.get("NNUNET_PYTHON", "/opt/nnunet-venv/bin/python"))
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segflow-bench-predict"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--segflow-results", type=Path, help="folder with plans.json and raw/dataset.json")
    parser.add_argument(
        "--devices", nargs=2, metavar=("A", "B"), help="time segflow alone on two devices (e.g. cuda cpu) instead"
    )
    add_segflow_only(parser)
    args = parser.parse_args()
    if args.segflow_only:
        args.devices = [args.device]
    args.hippocampus = args.hippocampus.resolve()
    results = preprocessed_hippocampus(args.hippocampus, args.work, args.segflow_results)
    segflow_model = args.work / "segflow_model"
    make_segflow_model(results, segflow_model, args.folds)
    if args.devices:
        return compare_devices(args, segflow_model)
    from segflow.nnunet_models import export_candidate

    shutil.rmtree(args.work / "exported", ignore_errors=True)
    nnunet_model = export_candidate(segflow_model, CONFIGURATION, args.work / "exported")
    images = args.work / "images"
    cases = msd_test_images(args.hippocampus, images, args.cases)
    outputs = {name: args.work / f"out_{name}" for name in ("nnunetv2", "segflow")}
    for out in outputs.values():
        shutil.rmtree(out, ignore_errors=True)
    nnunet_bin = Path(args.nnunet_python).parent
    nnunet_command = [str(nnunet_bin / "nnUNetv2_predict_from_modelfolder"), "-i", str(images)]
    nnunet_command += ["-m", str(nnunet_model), "-f", *[str(f) for f in range(args.folds)], "-device", args.device]
    nnunet_command += ["--disable_progress_bar"]
    segflow_command = [sys.executable, "-m", "segflow.cli", "predict", "-i", str(images)]
    segflow_command += ["-o", str(outputs["segflow"]), "-m", str(segflow_model), "--device", args.device]
    environment = nnunet_env(args.work / "nnunet_env")
    nn = timed([*nnunet_command, "-o", str(outputs["nnunetv2"]), "-npp", "1", "-nps", "1"], environment)
    defaults = args.work / "out_nnunetv2_defaults"
    shutil.rmtree(defaults, ignore_errors=True)
    nn_defaults = timed([*nnunet_command, "-o", str(defaults)], environment)
    sf = timed(segflow_command)
    figures = {
        "cases": len(cases),
        "folds": args.folds,
        "nnunetv2_s_per_case": nn / len(cases),
        "nnunetv2_defaults_s_per_case": nn_defaults / len(cases),
        "segflow_s_per_case": sf / len(cases),
        "ratio": sf / nn,
        "ratio_to_defaults": sf / nn_defaults,
        **agreement(cases, outputs["nnunetv2"], outputs["segflow"]),
    }
    print(f"== Hippocampus test images, {CONFIGURATION}, {args.folds} folds, mirroring on, {args.device}")
    print(f"   nnunetv2 2.8.1: {figures['nnunetv2_s_per_case']:.2f} s per case ({len(cases)} cases, whole command)")
    print(f"   nnunetv2 2.8.1, its default workers: {figures['nnunetv2_defaults_s_per_case']:.2f} s per case")
    print(f"   segflow:        {figures['segflow_s_per_case']:.2f} s per case")
    print(
        f"   ratio segflow / nnunetv2: {figures['ratio']:.2f} (-npp 1 -nps 1),"
        f" {figures['ratio_to_defaults']:.2f} (its defaults)"
    )
    between = ", ".join(f"label {k} {v:.4f}" for k, v in figures["dice_between"].items())
    print(f"   agreement of the two: Dice {between}; identical maps: {figures['identical_cases']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
