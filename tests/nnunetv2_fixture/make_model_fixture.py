"""Regenerate tests/data/nnunetv2_model/: a small trained nnU-Net v2 model folder, as nnunetv2 2.8.1 writes it,
and nnunetv2's own predictions with it, for tests/test_nnunet_models.py (CI has no nnunetv2). Run it with
nnunetv2's own Python (../shared/reference/anchor-nnunetv2.md):

    /path/to/nnunet-venv/bin/python tests/nnunetv2_fixture/make_model_fixture.py

What it does, all with nnunetv2's commands on the parity dataset (tests/data/nnunetv2/raw, 5 small anisotropic
cases, two channels, labels 1 and 2):
* ``nnUNetv2_plan_and_preprocess -c 3d_fullres 2d``, then a tiny plan (``nnUNetPlansTiny``: the same plans with
  8, 16, 32, ... features per stage, so that checkpoints stay small) that reuses the preprocessed data;
* ``nnUNetv2_train`` 3d_fullres folds 0 and 1 and 2d fold 0 with a short trainer (``nnUNetTrainer_Fixture``,
  8 epochs x 40 iterations, checkpoint_best.pth frozen after epoch 4 so that it differs from the final one);
* ``nnUNetv2_predict_from_modelfolder`` of two images: 3d_fullres folds 0+1 with checkpoint_final.pth
  (``predictions/folds_0_1``), 3d_fullres fold 0 with checkpoint_best.pth (``predictions/fold_0_best``), each
  with ``--save_probabilities``;
* the ensemble of 3d_fullres and 2d, fold 0 each, of the two images and of ``pair_000_003`` (the two side by
  side): ``nnUNetv2_ensemble`` of their probabilities (``predictions/ensemble_fold_0``), then
  ``nnUNetv2_apply_postprocessing`` of it with largest-component steps (``.../postprocessed``), which are also
  written as the postprocessing.json that nnU-Net's determination writes beside its pickle.

It keeps the pair's images (``images/``), the model folders' plans.json, dataset.json, dataset_fingerprint.json
and fold checkpoints as nnunetv2 wrote them (progress plots, logs and validation outputs are left out), the
predictions, postprocessing.json (not its pickle) and manifest.json (versions, cases, commands).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_planner_fixture import nnunet_folders  # noqa: E402

DATA = HERE.parent / "data"
OUT = DATA / "nnunetv2_model"
DATASET = "Dataset950_Parity"
TRAINER, PLANS, CONFIGURATION = "nnUNetTrainer_Fixture", "nnUNetPlansTiny", "3d_fullres"
MODEL = f"{TRAINER}__{PLANS}__{CONFIGURATION}"
MODEL_2D = f"{TRAINER}__{PLANS}__2d"
FOLDS = (0, 1)
TRAINED = {CONFIGURATION: FOLDS, "2d": (0,)}
CASES = ("parity_000", "parity_003")
PAIR = "pair_000_003"
#: The ensemble's postprocessing, as nnunetv2's keyword arguments: the foreground's largest component, then label 2's.
POSTPROCESSING = [{"labels_or_regions": [1, 2]}, {"labels_or_regions": 2}]
PREDICTIONS = {  # folder name -> (folds, checkpoint)
    "folds_0_1": (FOLDS, "checkpoint_final.pth"),
    "fold_0_best": ((0,), "checkpoint_best.pth"),
}
TRAINER_SOURCE = f"""
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {TRAINER}(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 8
        self.num_iterations_per_epoch = 40
        self.num_val_iterations_per_epoch = 5

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.current_epoch == 4:  # checkpoint_best.pth stays the best of the first four epochs
            self._best_ema = float("inf")
"""


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def readable(command: list[str], base: Path) -> str:
    """A command as one line, with the throw-away folders named as nnU-Net's variables."""
    line = " ".join([Path(command[0]).name, *command[1:]])
    line = line.replace(str(base / "results"), "$nnUNet_results").replace(str(base / "images"), "IMAGES")
    return line.replace(str(OUT), "tests/data/nnunetv2_model").replace(str(base), "TMP")


def tiny_plans(preprocessed: Path) -> None:
    """nnUNetPlansTiny.json beside nnUNetPlans.json: 8, 16, 32, ... features, the same data identifiers."""
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    plans["plans_name"] = PLANS
    for configuration in TRAINED:
        arch = plans["configurations"][configuration]["architecture"]["arch_kwargs"]
        arch["features_per_stage"] = [8 * 2**i for i in range(arch["n_stages"])]
    (preprocessed / f"{PLANS}.json").write_text(json.dumps(plans, indent=2))


def run(commands: list, command: list, env: dict) -> None:
    commands.append(command)
    subprocess.run(command, env=env, check=True)


def predict(commands: list, images: Path, out: Path, model: Path, folds, checkpoint: str, env: dict) -> None:
    command = [tool("nnUNetv2_predict_from_modelfolder"), "-i", str(images), "-o", str(out), "-m", str(model)]
    command += ["-f", *map(str, folds), "-chk", checkpoint, "-device", "cpu"]
    run(commands, [*command, "--save_probabilities", "-npp", "1", "-nps", "1"], env)


def pair_image(images: Path) -> None:
    """pair_000_003: the two images side by side (a gap of 4 voxels along x, on parity_000's grid), so that each
    label is predicted as two components of different sizes, which postprocessing can tell apart."""
    import numpy as np
    import SimpleITK as sitk

    for channel in (0, 1):
        arrays = [sitk.GetArrayFromImage(sitk.ReadImage(str(images / f"{c}_{channel:04d}.nii.gz"))) for c in CASES]
        z, y = (max(a.shape[i] for a in arrays) for i in (0, 1))
        padded = [np.pad(a, [(0, z - a.shape[0]), (0, y - a.shape[1]), (0, 0)]) for a in arrays]
        gap = np.zeros((z, y, 4), arrays[0].dtype)
        pair = sitk.GetImageFromArray(np.concatenate([padded[0], gap, padded[1]], axis=2))
        reference = sitk.ReadImage(str(images / f"{CASES[0]}_{channel:04d}.nii.gz"))
        pair.SetSpacing(reference.GetSpacing())
        pair.SetOrigin(reference.GetOrigin())
        pair.SetDirection(reference.GetDirection())
        sitk.WriteImage(pair, str(images / f"{PAIR}_{channel:04d}.nii.gz"))
        (OUT / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(images / f"{PAIR}_{channel:04d}.nii.gz", OUT / "images")


def ensemble(commands: list, base: Path, images: Path, env: dict) -> None:
    """nnunetv2's ensemble of 3d_fullres and 2d (fold 0 each) of the two images and their pair, and that ensemble
    postprocessed by nnUNetv2_apply_postprocessing with POSTPROCESSING: the steps are chosen here (nnunetv2's
    determination keeps none on this easy set), written as the pickle nnunetv2 applies and as the
    postprocessing.json its determination writes beside it (the two keys segflow reads)."""
    import pickle

    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation

    pair_image(images)
    members = []
    for model in (MODEL, MODEL_2D):
        members.append(base / "members" / model)
        predict(commands, images, members[-1], base / "results" / DATASET / model, (0,), "checkpoint_final.pth", env)
    out = OUT / "predictions" / "ensemble_fold_0"
    run(commands, [tool("nnUNetv2_ensemble"), "-i", *map(str, members), "-o", str(out), "-np", "1"], env)
    functions = [remove_all_but_largest_component_from_segmentation] * len(POSTPROCESSING)
    (base / "postprocessing.pkl").write_bytes(pickle.dumps((functions, POSTPROCESSING)))
    postprocessing = {"postprocessing_fns": [f.__name__ for f in functions], "postprocessing_kwargs": POSTPROCESSING}
    (out / "postprocessing.json").write_text(json.dumps(postprocessing, indent=2) + "\n")
    model = base / "results" / DATASET / MODEL
    apply = [tool("nnUNetv2_apply_postprocessing"), "-i", str(out), "-o", str(out / "postprocessed")]
    apply += ["-pp_pkl_file", str(base / "postprocessing.pkl"), "-np", "1"]
    apply += ["-plans_json", str(model / "plans.json"), "-dataset_json", str(model / "dataset.json")]
    run(commands, apply, env)


def main() -> None:
    from importlib import metadata

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        shutil.copytree(DATA / "nnunetv2" / "raw" / DATASET, base / "raw" / DATASET)
        (base / "trainers").mkdir()
        (base / "trainers" / "fixture_trainer.py").write_text(TRAINER_SOURCE)
        env = {**nnunet_folders(base), "nnUNet_compile": "False", "nnUNet_n_proc_DA": "1"}
        env["nnUNet_extTrainer"] = str(base / "trainers")
        commands: list = []
        plan = [tool("nnUNetv2_plan_and_preprocess"), "-d", "950", "-c", *TRAINED, "-np", "1", "-npfp", "1"]
        run(commands, plan, env)
        tiny_plans(base / "preprocessed" / DATASET)
        for configuration, folds in TRAINED.items():
            for fold in folds:
                train = [tool("nnUNetv2_train"), "950", configuration, str(fold), "-p", PLANS, "-tr", TRAINER]
                run(commands, [*train, "-device", "cpu"], env)
        model = base / "results" / DATASET / MODEL
        images = base / "images"
        images.mkdir()
        for case in CASES:
            for channel in (0, 1):
                name = f"{case}_{channel:04d}.nii.gz"
                shutil.copy(base / "raw" / DATASET / "imagesTr" / name, images / name)
        shutil.rmtree(OUT, ignore_errors=True)
        for folder, (folds, checkpoint) in PREDICTIONS.items():
            predict(commands, images, OUT / "predictions" / folder, model, folds, checkpoint, env)
        ensemble(commands, base, images, env)
        for name, folds in ((MODEL, FOLDS), (MODEL_2D, TRAINED["2d"])):
            kept = OUT / DATASET / name
            kept.mkdir(parents=True)
            for file in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
                shutil.copy(base / "results" / DATASET / name / file, kept / file)
            for fold in folds:
                (kept / f"fold_{fold}").mkdir()
                shutil.copy(
                    base / "results" / DATASET / name / f"fold_{fold}" / "checkpoint_final.pth", kept / f"fold_{fold}"
                )
        shutil.copy(model / "fold_0" / "checkpoint_best.pth", OUT / DATASET / MODEL / "fold_0")
        # the predictor's copies of plans and dataset.json, evaluation summaries, and every pickle
        for extra in ("plans.json", "dataset.json", "predict_from_raw_data_args.json", "summary.json", "*.pkl"):
            for path in (OUT / "predictions").rglob(extra):
                path.unlink()
        manifest = {
            "nnunetv2": metadata.version("nnunetv2"),
            "torch": torch.__version__,
            "models": [f"{DATASET}/{MODEL}", f"{DATASET}/{MODEL_2D}"],
            "images": f"tests/data/nnunetv2/raw/imagesTr: {', '.join(CASES)}",
            "predictions": {
                **{k: {"folds": list(f), "checkpoint": c} for k, (f, c) in PREDICTIONS.items()},
                "ensemble_fold_0": {
                    "members": [MODEL, MODEL_2D],
                    "folds": [0],
                    "cases": [*CASES, PAIR],
                    "postprocessed": POSTPROCESSING,
                },
            },
            "commands": [readable(command, base) for command in commands],
        }
        (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
