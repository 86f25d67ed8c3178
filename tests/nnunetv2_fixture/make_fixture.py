"""Regenerate tests/data/nnunetv2/, what nnunetv2 2.8.1 computes on small inputs, for the parity tests
(tests/test_nnunetv2_parity.py; CI has no nnunetv2). Run it with nnunetv2's own Python:

    /path/to/nnunet-venv/bin/python tests/nnunetv2_fixture/make_fixture.py [augmentation sampling preprocessing]

(../shared/reference/anchor-nnunetv2.md: `pip install nnunetv2==2.8.1 torch==2.13.0 torchvision==0.28.0`.)
It writes:
* raw/Dataset950_Parity/: 5 small anisotropic cases, channel 0 "CT", channel 1 "T2", labels 1 and 2;
* expected/: nnunetv2's dataset_fingerprint.json, nnUNetPlans.json, and per configuration (2d, 3d_fullres)
  and case the preprocessed arrays (CASE.npz: data, seg) and properties with the class locations (CASE.json);
* augmentation.json: nnunetv2's rotation range, dummy-2D decision, mirror axes and enlarged patch, and its
  training and validation pipelines described transform by transform (parity_inputs.py);
* augmented.npz: samples augmented by those pipelines from shared inputs under fixed numpy/torch seeds;
* sampling.json: labels at the centres of 10 000 patches cut by nnunetv2's data loader from a label map
  with an ignore label (3D and 2D), forced-foreground and other samples apart; and ("without_ignore") the
  corners of 10 000 patches cut from a map without one.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_planner_fixture import nnunet_folders  # noqa: E402
from parity_inputs import (  # noqa: E402
    IGNORE_LABELS,
    PIPELINES,
    PLAIN_LABELS,
    SAMPLE_SEEDS,
    SAMPLING,
    SAMPLING_BATCH_SIZE,
    SAMPLING_PATCHES,
    SAMPLING_SEED,
    augmentation_input,
    centre_label_counts,
    coordinate_image,
    corner_counts,
    describe,
    ignore_label_map,
    labelled_map,
)

OUT = HERE.parent / "data" / "nnunetv2"
DATASET = "Dataset950_Parity"


def write_raw(raw: Path) -> None:
    """Five small anisotropic cases of different shapes and spacings (so every configuration resamples), a
    body that is zero outside (so cropping has work), channel 0 CT-like, channel 1 MR-like, two labels."""
    import SimpleITK as sitk

    rng = np.random.RandomState(950)
    for number in range(5):
        case = f"parity_{number:03d}"
        shape = (rng.randint(8, 13), rng.randint(20, 29), rng.randint(18, 27))
        spacing = (float(rng.choice([2.5, 3.0, 3.5])), float(rng.uniform(0.7, 0.9)), float(rng.uniform(0.7, 0.9)))
        grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
        radius = sum((g / r) ** 2 for g, r in zip(grid, (0.9, 0.8, 0.85), strict=True))
        label = np.zeros(shape, np.uint8)
        label[radius < 0.45] = 1
        label[radius < 0.12] = 2
        body = radius < 1.0
        ct = np.where(body, 40 + 60 * label + rng.normal(0, 15, shape), 0)
        mr = np.where(body, 300 + 150 * (label == 1) - 100 * (label == 2) + rng.normal(0, 30, shape), 0)
        for channel, array in enumerate((ct, mr)):
            write(sitk, array.astype(np.float32), spacing, raw / "imagesTr" / f"{case}_{channel:04d}.nii.gz")
        write(sitk, label, spacing, raw / "labelsTr" / f"{case}.nii.gz")
    meta = {
        "channel_names": {"0": "CT", "1": "T2"},
        "labels": {"background": 0, "outer": 1, "inner": 2},
        "numTraining": 5,
        "file_ending": ".nii.gz",
        "name": "SegflowParity",
    }
    (raw / "dataset.json").write_text(json.dumps(meta, indent=1))


def write(sitk, array: np.ndarray, spacing, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[::-1])
    image.SetOrigin((12.5, -30.0, 4.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def preprocessing() -> None:
    raw = OUT / "raw" / DATASET
    shutil.rmtree(OUT / "raw", ignore_errors=True)
    write_raw(raw)
    expected = OUT / "expected"
    shutil.rmtree(expected, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        env = {**nnunet_folders(base), "nnUNet_raw": str(OUT / "raw")}
        command = [str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", "950"]
        subprocess.run([*command, "-c", "2d", "3d_fullres", "-np", "1", "-npfp", "1"], env=env, check=True)
        theirs = base / "preprocessed" / DATASET
        expected.mkdir(parents=True)
        for name in ("dataset_fingerprint.json", "nnUNetPlans.json"):
            shutil.copy(theirs / name, expected / name)
        for configuration in ("2d", "3d_fullres"):
            export_preprocessed(theirs / f"nnUNetPlans_{configuration}", expected / configuration)


def export_preprocessed(folder: Path, target: Path) -> None:
    import blosc2

    target.mkdir(parents=True)
    for properties_file in sorted(folder.glob("*.pkl")):
        case = properties_file.stem
        data = blosc2.open(str(folder / f"{case}.b2nd"))[:]
        seg = blosc2.open(str(folder / f"{case}_seg.b2nd"))[:]
        np.savez_compressed(target / f"{case}.npz", data=data, seg=seg)
        with open(properties_file, "rb") as f:
            properties = pickle.load(f)  # nnunetv2's own file, written a moment ago by nnunetv2
        locations = {
            str(k): np.asarray(v).reshape(-1, 4)[:, 1:].tolist() for k, v in properties["class_locations"].items()
        }
        keep = ("shape_before_cropping", "bbox_used_for_cropping", "shape_after_cropping_and_before_resampling")
        summary = {k: describe(properties[k]) for k in keep}
        (target / f"{case}.json").write_text(json.dumps({**summary, "class_locations": locations}))


def trainer_settings(patch) -> dict:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    stub = SimpleNamespace(
        configuration_manager=SimpleNamespace(patch_size=list(patch)), print_to_log_file=lambda *a, **k: None
    )
    rotation, dummy_2d, initial, mirror = nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size(stub)
    return {
        "rotation": [float(r) for r in rotation],
        "dummy_2d": bool(dummy_2d),
        "enlarged_patch": [int(p) for p in initial],
        "mirror_axes": list(mirror),
    }


def pipelines(settings: dict, spec: dict):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    cascade = spec["cascade"]
    training = nnUNetTrainer.get_training_transforms(
        spec["patch"],
        tuple(settings["rotation"]),
        None,
        tuple(settings["mirror_axes"]),
        settings["dummy_2d"],
        use_mask_for_norm=spec["mask"],
        is_cascaded=cascade is not None,
        foreground_labels=cascade,
        regions=None,
        ignore_label=None,
    )
    validation = nnUNetTrainer.get_validation_transforms(None, cascade is not None, cascade, None, None)
    return training, validation


def augmentation() -> None:
    described, samples = {}, {}
    torch.set_num_threads(1)
    for name, spec in PIPELINES.items():
        settings = trainer_settings(spec["patch"])
        training, validation = pipelines(settings, spec)
        described[name] = {**settings, "training": describe(training), "validation": describe(validation)}
        if not spec["samples"]:
            continue
        for seed in SAMPLE_SEEDS:
            image, seg = augmentation_input(len(spec["mask"]), settings["enlarged_patch"], spec["cascade"] is not None)
            np.random.seed(seed)
            torch.manual_seed(seed)
            out = training(image=image, segmentation=seg)
            samples[f"{name}/{seed}/image"] = out["image"].numpy()
            samples[f"{name}/{seed}/segmentation"] = out["segmentation"].numpy()
    (OUT / "augmentation.json").write_text(json.dumps(described, indent=1))
    np.savez_compressed(OUT / "augmented.npz", **samples)


class OneCase:
    """The dataset interface nnunetv2's loader reads: one case held in memory."""

    def __init__(self, seg: np.ndarray, class_locations: dict, data: np.ndarray | None = None):
        self.identifiers = ["case"]
        self.data = np.zeros((1, *seg.shape[1:]), np.float32) if data is None else data
        self.seg, self.class_locations = seg, class_locations

    def load_case(self, identifier):
        return self.data, self.seg, None, {"class_locations": self.class_locations}


def sampling() -> None:
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    seg = ignore_label_map()
    manager = LabelManager(IGNORE_LABELS, None)
    classes = [*manager.foreground_labels, [-1, *manager.all_labels]]
    locations = DefaultPreprocessor._sample_foreground_locations(seg, classes)
    counts = {}
    for name, patch in SAMPLING.items():
        enlarged = trainer_settings(patch)["enlarged_patch"]
        loader = nnUNetDataLoader(
            OneCase(seg, locations), SAMPLING_BATCH_SIZE, enlarged, patch, manager, oversample_foreground_percent=0.33
        )
        np.random.seed(SAMPLING_SEED)
        batches = [
            loader.generate_train_batch()["target"].numpy() for _ in range(SAMPLING_PATCHES // SAMPLING_BATCH_SIZE)
        ]
        counts[name] = {"enlarged_patch": enlarged, **centre_label_counts(batches, enlarged, SAMPLING_BATCH_SIZE)}
    counts["without_ignore"] = corners_without_ignore()
    (OUT / "sampling.json").write_text(json.dumps(counts, indent=1))


def corners_without_ignore() -> dict:
    """Where nnunetv2's loader cuts 10 000 patches from a map without an ignore label (random corners, and
    forced foreground), 3D and 2D: the corners per axis, read off a coordinate image."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    seg = labelled_map()
    manager = LabelManager(PLAIN_LABELS, None)
    locations = DefaultPreprocessor._sample_foreground_locations(seg, manager.foreground_labels)
    case = OneCase(seg, locations, coordinate_image(seg.shape[1:]))
    counts = {}
    for name, patch in SAMPLING.items():
        enlarged = trainer_settings(patch)["enlarged_patch"]
        loader = nnUNetDataLoader(
            case, SAMPLING_BATCH_SIZE, enlarged, patch, manager, oversample_foreground_percent=0.33
        )
        np.random.seed(SAMPLING_SEED)
        batches = [loader.generate_train_batch()["data"] for _ in range(SAMPLING_PATCHES // SAMPLING_BATCH_SIZE)]
        counts[name] = {"enlarged_patch": enlarged, **corner_counts(batches, SAMPLING_BATCH_SIZE)}
    return counts


def main() -> None:
    """Every part of the fixture, or those named on the command line (augmentation, sampling, preprocessing)."""
    import nnunetv2  # noqa: F401

    OUT.mkdir(parents=True, exist_ok=True)
    parts = {"augmentation": augmentation, "sampling": sampling, "preprocessing": preprocessing}
    for name in sys.argv[1:] or parts:
        parts[name]()
    versions = {"torch": torch.__version__}
    from importlib.metadata import version

    versions.update({p: version(p) for p in ("nnunetv2", "batchgeneratorsv2", "acvl_utils")})
    (OUT / "versions.json").write_text(json.dumps(versions, indent=1))


if __name__ == "__main__":
    main()
