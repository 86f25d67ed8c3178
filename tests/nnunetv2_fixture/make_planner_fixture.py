"""Regenerate the ``expected`` plans of tests/data/planner_*.json: what nnunetv2 2.8.1's planners (default,
ResEnc M, L, XL) make of each stored fingerprint. Run it with nnunetv2's own Python:

    /path/to/nnunet-venv/bin/python tests/nnunetv2_fixture/make_planner_fixture.py [PATH/TO/Task04_Hippocampus]

With the MSD Hippocampus folder it also (re)writes planner_hippocampus.json: nnunetv2's own fingerprint of
that task (converted with nnUNetv2_convert_MSD_dataset, nnUNetv2_extract_fingerprint) and its plans.

Each planner runs on a throw-away nnU-Net tree: the stored fingerprint as dataset_fingerprint.json, the stored
dataset.json and one tiny image so that nnunetv2 can pick its reader. The planner reads nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "data"
PLANNERS = {
    "default": "ExperimentPlanner",
    "resenc_m": "nnUNetPlannerResEncM",
    "resenc_l": "nnUNetPlannerResEncL",
    "resenc_xl": "nnUNetPlannerResEncXL",
}
SYNTHETIC = ("anisotropic", "large", "flat2d")
FINGERPRINT_KEYS = (
    "foreground_intensity_properties_per_channel",
    "median_relative_size_after_cropping",
    "shapes_after_crop",
    "spacings",
)
#: What a test compares: plan-level keys, then architecture keys.
CONFIGURATION_KEYS = (
    "data_identifier",
    "patch_size",
    "batch_size",
    "spacing",
    "median_image_size_in_voxels",
    "batch_dice",
    "normalization_schemes",
    "use_mask_for_norm",
    "next_stage",
    "previous_stage",
    "inherits_from",
)
ARCHITECTURE_KEYS = (
    "n_stages",
    "features_per_stage",
    "strides",
    "kernel_sizes",
    "n_conv_per_stage",
    "n_blocks_per_stage",
    "n_conv_per_stage_decoder",
)


def nnunet_folders(base: Path) -> dict:
    """The environment that points nnunetv2 at folders under ``base``."""
    folders = {"nnUNet_raw": "raw", "nnUNet_preprocessed": "preprocessed", "nnUNet_results": "results"}
    return {**os.environ, **{k: str(base / v) for k, v in folders.items()}}


def nnunet_tree(base: Path, number: int, fingerprint: dict, dataset_json: dict) -> str:
    import SimpleITK as sitk

    name = f"Dataset{number:03d}_Planner"
    raw = base / "raw" / name
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    image = sitk.GetImageFromArray(np.zeros((4, 4, 4), dtype=np.float32))
    sitk.WriteImage(image, str(raw / "imagesTr" / "case_000_0000.nii.gz"))
    sitk.WriteImage(sitk.Cast(image, sitk.sitkUInt8), str(raw / "labelsTr" / "case_000.nii.gz"))
    preprocessed = base / "preprocessed" / name
    preprocessed.mkdir(parents=True)
    (preprocessed / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    return name


def summary(plans: dict) -> dict:
    configurations = {}
    for name, configuration in plans["configurations"].items():
        kept = {k: configuration[k] for k in CONFIGURATION_KEYS if k in configuration}
        arch = configuration.get("architecture", {})
        if arch:
            kept["network_class_name"] = arch["network_class_name"]
            kept.update({k: arch["arch_kwargs"][k] for k in ARCHITECTURE_KEYS if k in arch["arch_kwargs"]})
        configurations[name] = kept
    return {
        "plans_name": plans["plans_name"],
        "transpose_forward": plans["transpose_forward"],
        "transpose_backward": plans["transpose_backward"],
        "configurations": configurations,
    }


def nnunet_plans(fingerprint: dict, dataset_json: dict) -> dict:
    """Each planner's complete plans. One subprocess per planner: nnunetv2 reads its folders from the
    environment at import."""
    plans_by_planner = {}
    for key, planner in PLANNERS.items():
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            name = nnunet_tree(base, 990, fingerprint, dataset_json)
            env = nnunet_folders(base)
            code = (
                "import json, sys; from nnunetv2.experiment_planning.experiment_planners."
                + (
                    "default_experiment_planner"
                    if key == "default"
                    else "residual_unets.residual_encoder_unet_planners"
                )
                + f" import {planner} as P; p = P('{name}'); p.plan_experiment(); "
                "print(json.dumps(p.plans))"
            )
            out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
            plans_by_planner[key] = json.loads(out.stdout.strip().splitlines()[-1])
    return plans_by_planner


def expected_plans(fingerprint: dict, dataset_json: dict) -> dict:
    expected = {}
    for key, plans in nnunet_plans(fingerprint, dataset_json).items():
        source = f"nnunetv2 2.8.1 {PLANNERS[key]}().plan_experiment() on this fingerprint"
        expected[key] = {"source": source, **summary(plans)}
    return expected


def hippocampus_case(task: Path) -> dict:
    """nnunetv2's own fingerprint of MSD Hippocampus and the dataset.json it converts to."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        env = nnunet_folders(base)
        bin_dir = Path(sys.executable).parent
        subprocess.run([bin_dir / "nnUNetv2_convert_MSD_dataset", "-i", str(task), "-np", "2"], env=env, check=True)
        subprocess.run([bin_dir / "nnUNetv2_extract_fingerprint", "-d", "4", "-np", "2"], env=env, check=True)
        fingerprint = json.loads(
            (base / "preprocessed" / "Dataset004_Hippocampus" / "dataset_fingerprint.json").read_text()
        )
        dataset_json = json.loads((base / "raw" / "Dataset004_Hippocampus" / "dataset.json").read_text())
    return {"fingerprint": {k: fingerprint[k] for k in FINGERPRINT_KEYS}, "dataset_json": dataset_json}


def main() -> None:
    names = list(SYNTHETIC)
    if len(sys.argv) > 1:
        case = hippocampus_case(Path(sys.argv[1]).resolve())
        (DATA / "planner_hippocampus.json").write_text(json.dumps(case, indent=1))
        names.append("hippocampus")
    for name in names:
        path = DATA / f"planner_{name}.json"
        case = json.loads(path.read_text())
        case["expected"] = expected_plans(case["fingerprint"], case["dataset_json"])
        path.write_text(json.dumps(case, indent=1))
        print(
            name, {k: v["configurations"].get("3d_fullres", {}).get("patch_size") for k, v in case["expected"].items()}
        )


if __name__ == "__main__":
    main()
