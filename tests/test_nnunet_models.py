"""nnU-Net v2 model folders: ``segflow predict -m`` on a folder that nnunetv2 2.8.1 trained reproduces nnunetv2's
own predictions, and its checkpoints are read without running any pickle.

The fixture (tests/data/nnunetv2_model, made by tests/nnunetv2_fixture/make_model_fixture.py with nnunetv2 2.8.1) is
a tiny 3d_fullres model of the parity dataset, folds 0 and 1, and nnunetv2's predictions of two of its images:
folds 0+1 with checkpoint_final.pth, and fold 0 with checkpoint_best.pth."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import NNUNET_MODEL, NNUNET_MODELS, Payload

from segflow.cli import main
from segflow.io import load_checkpoint

FIXTURE, MODEL = NNUNET_MODELS, NNUNET_MODEL
RAW = Path(__file__).parent / "data" / "nnunetv2" / "raw" / "Dataset950_Parity" / "imagesTr"
CASES = ("parity_000", "parity_003")


@pytest.fixture
def images(tmp_path_factory) -> Path:
    """The two images nnunetv2 predicted, as CASE_XXXX channel files."""
    folder = tmp_path_factory.mktemp("images")
    for case in CASES:
        for channel in (0, 1):
            shutil.copy(RAW / f"{case}_{channel:04d}.nii.gz", folder)
    return folder


def segflow_predict(images: Path, out: Path, model: Path, *args: str) -> None:
    main(["predict", "-i", str(images), "-o", str(out), "-m", str(model), "--device", "cpu", *args])


def labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    return 2 * np.sum((a == label) & (b == label)) / (np.sum(a == label) + np.sum(b == label))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("expected", "args"),
    [("folds_0_1", []), ("fold_0_best", ["-f", "0", "-chk", "checkpoint_best.pth"])],
    ids=["folds_0_1_final", "fold_0_best"],
)
def test_segflow_predict_reproduces_nnunetv2s_predictions_with_its_model_folder(images, tmp_path, expected, args):
    """Same label maps (Dice >= 0.999 per label) and probabilities within nnunetv2's float16 tile accumulation."""
    segflow_predict(images, tmp_path, MODEL, "--save-probabilities", *args)
    for case in CASES:
        ours, theirs = (
            labels(tmp_path / f"{case}.nii.gz"),
            labels(FIXTURE / "predictions" / expected / f"{case}.nii.gz"),
        )
        assert ours.shape == theirs.shape
        for label in (1, 2):
            assert np.sum(theirs == label) > 20, "the fixture's model segments both labels"
            assert dice(ours, theirs, label) >= 0.999, (case, label)
        with np.load(tmp_path / f"{case}.npz") as a, np.load(FIXTURE / "predictions" / expected / f"{case}.npz") as b:
            np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=5e-3, rtol=0)


def test_best_and_final_checkpoints_differ_so_chk_chooses(tmp_path):
    best = load_checkpoint(MODEL / "fold_0" / "checkpoint_best.pth")["network_weights"]
    final = load_checkpoint(MODEL / "fold_0" / "checkpoint_final.pth")["network_weights"]
    assert best.keys() == final.keys()
    assert any(not torch.equal(best[k], final[k]) for k in best)


def test_nnunets_checkpoints_load_with_weights_only_and_segflows_allowlist():
    """nnunetv2 stores numpy scalars (its EMA Dice, losses): torch's default weights_only refuses them, which is
    why nnunetv2 loads with weights_only=False; segflow's allowlist of plain numpy types reads them."""
    path = MODEL / "fold_1" / "checkpoint_final.pth"
    with pytest.raises(pickle.UnpicklingError, match="numpy"):
        torch.load(path, weights_only=True)
    checkpoint = load_checkpoint(path)
    assert checkpoint["init_args"]["configuration"] == "3d_fullres" and checkpoint["init_args"]["fold"] == 1
    assert isinstance(checkpoint["logging"]["ema_fg_dice"][-1], np.floating)
    assert tuple(checkpoint["inference_allowed_mirroring_axes"]) == (0, 1, 2)


@pytest.fixture
def model_copy(tmp_path) -> Path:
    copy = tmp_path / "results" / MODEL.name
    shutil.copytree(MODEL, copy)
    return copy


def failed_predict(images, tmp_path, model, capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        segflow_predict(images, tmp_path / "out", model, *args)
    assert exit_info.value.code == 1
    return capsys.readouterr().err


def test_an_nnunet_checkpoint_carrying_a_pickle_payload_is_refused_and_never_runs(images, model_copy, tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    checkpoint = model_copy / "fold_0" / "checkpoint_final.pth"
    torch.save({**load_checkpoint(checkpoint), "logging": Payload(marker)}, checkpoint)
    message = failed_predict(images, tmp_path, model_copy, capsys)
    assert f"file {checkpoint}" in message and "could run code, so it was refused" in message, message
    assert not marker.exists() and not list((tmp_path / "out").glob("*.nii.gz"))
    torch.load(checkpoint, weights_only=False)  # the payload is real: loaded as nnunetv2 loads, it runs
    assert marker.exists()


def test_a_missing_fold_is_named_with_the_folds_the_folder_has(images, model_copy, tmp_path, capsys):
    message = failed_predict(images, tmp_path, model_copy, capsys, "-f", "0", "3")
    assert f"file {model_copy / 'fold_3' / 'checkpoint_final.pth'}" in message, message
    assert "this folder has: 0, 1" in message, message


def test_configurations_cannot_be_chosen_in_an_nnunet_folder(images, model_copy, tmp_path, capsys):
    message = failed_predict(images, tmp_path, model_copy, capsys, "-c", "2d")
    assert "holds one configuration" in message and str(model_copy) in message, message


def test_a_cascade_model_folder_is_refused_with_a_way_out(images, model_copy, tmp_path, capsys):
    plans = json.loads((model_copy / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["previous_stage"] = "3d_lowres"
    (model_copy / "plans.json").write_text(json.dumps(plans))
    message = failed_predict(images, tmp_path, model_copy, capsys)
    assert "is a cascade stage" in message and "3d_lowres" in message, message


def test_segflow_evaluate_takes_the_labels_from_an_nnunet_model_folder(tmp_path, capsys):
    """``-m`` reads the labels of nnU-Net's dataset.json; the mean Dice per label is that of the arrays."""
    predictions, references = FIXTURE / "predictions" / "folds_0_1", RAW.parent / "labelsTr"
    summary_path = tmp_path / "summary.json"
    main(["evaluate", "-ref", str(references), "-pred", str(predictions), "-m", str(MODEL), "-o", str(summary_path)])
    summary = json.loads(summary_path.read_text())
    assert sorted(summary["mean"]) == ["1", "2"]
    for label in (1, 2):
        by_hand = [dice(labels(predictions / f"{c}.nii.gz"), labels(references / f"{c}.nii.gz"), label) for c in CASES]
        assert summary["mean"][str(label)]["Dice"] == pytest.approx(np.mean(by_hand), abs=1e-9)


MODEL_2D = MODEL.with_name("nnUNetTrainer_Fixture__nnUNetPlansTiny__2d")


PAIR = "pair_000_003"  # the two images side by side: two components per label, of different sizes


def assert_same_maps(ours: Path, theirs: Path) -> None:
    for case in (*CASES, PAIR):
        a, b = labels(ours / f"{case}.nii.gz"), labels(theirs / f"{case}.nii.gz")
        for label in (1, 2):
            assert dice(a, b, label) >= 0.999, (theirs, case, label)


@pytest.mark.slow
def test_an_ensemble_of_nnunet_folders_and_its_postprocessing_reproduce_nnunetv2s(images, tmp_path):
    """Several -m: probabilities averaged as nnUNetv2_ensemble does; -pp: the steps of an nnU-Net
    postprocessing.json applied as nnUNetv2_apply_postprocessing applies them (its pickle)."""
    from scipy import ndimage

    expected = FIXTURE / "predictions" / "ensemble_fold_0"
    for channel in (0, 1):
        shutil.copy(FIXTURE / "images" / f"{PAIR}_{channel:04d}.nii.gz", images)
    ensemble = ["predict", "-i", str(images), "-m", str(MODEL), str(MODEL_2D), "-f", "0", "--device", "cpu"]
    main([*ensemble, "-o", str(tmp_path / "ensemble")])
    assert_same_maps(tmp_path / "ensemble", expected)
    main([*ensemble, "-o", str(tmp_path / "postprocessed"), "-pp", str(expected / "postprocessing.json")])
    assert_same_maps(tmp_path / "postprocessed", expected / "postprocessed")
    pair, postprocessed = labels(expected / f"{PAIR}.nii.gz"), labels(expected / "postprocessed" / f"{PAIR}.nii.gz")
    assert ndimage.label(pair > 0)[1] == 2 and ndimage.label(postprocessed > 0)[1] == 1  # the step did something


def test_nnunets_postprocessing_json_becomes_segflows_steps(tmp_path):
    """Labels, a list of labels and regions (lists of labels) each keep the largest component of their union."""
    from segflow.errors import InputError
    from segflow.nnunet_models import LARGEST_COMPONENT, nnunet_postprocessing

    path = tmp_path / "postprocessing.json"
    kwargs = [{"labels_or_regions": [1, 2]}, {"labels_or_regions": 2}, {"labels_or_regions": [[1, 2, 3], [2, 3]]}]
    path.write_text(json.dumps({"postprocessing_fns": [LARGEST_COMPONENT] * 3, "postprocessing_kwargs": kwargs}))
    assert nnunet_postprocessing(path) == [{"labels": [1, 2]}, {"labels": [2]}, {"labels": [1, 2, 3]}]
    path.write_text(json.dumps({"postprocessing_fns": ["my_own_cleanup"], "postprocessing_kwargs": [{}]}))
    with pytest.raises(InputError, match="names the postprocessing my_own_cleanup"):
        nnunet_postprocessing(path)


def test_a_workflow_results_folder_is_not_ensembled_with_several_m(images, demo_results, tmp_path, capsys):
    message = failed_predict(images, tmp_path, MODEL, capsys, "-m", str(MODEL), str(demo_results))
    assert f"file {demo_results}]" in message and "only those are ensembled" in message, message


# --- export: segflow's models as nnU-Net v2 model folders -----------------------------------------------------

DEMO = "Task900_SegflowDemo"
#: What nnunetv2 2.8.1's predictor reads from a fold checkpoint (nnUNetPredictor.initialize_from_trained_model_folder).
PREDICTOR_KEYS = ("network_weights", "trainer_name", "init_args", "inference_allowed_mirroring_axes")


@pytest.fixture(scope="module")
def demo_results(demo_run, tmp_path_factory) -> Path:
    """A copy of the demo's results folder: metadata and the trained folds."""
    source, copy = demo_run / "results" / DEMO, tmp_path_factory.mktemp("demo_results") / DEMO
    for path in [*source.glob("*.json"), *source.glob("train/*/fold_*/checkpoint_final.pt")]:
        (copy / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy / path.relative_to(source))
    return copy


@pytest.fixture(scope="module")
def demo_images(demo_run) -> Path:
    return demo_run / "resources" / DEMO / "imagesTs"


def test_an_exported_model_folder_has_what_nnunetv2_reads_and_predicts_as_segflow_does(
    demo_results, demo_images, tmp_path
):
    main(["export-nnunet", "-m", str(demo_results), "-o", str(tmp_path / "nnunet"), "-c", "3d_fullres"])
    folder = tmp_path / "nnunet" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    assert sorted(p.name for p in folder.iterdir()) == ["dataset.json", "fold_0", "fold_1", "plans.json"]
    assert json.loads((folder / "plans.json").read_text()) == json.loads((demo_results / "plans.json").read_text())
    ours = load_checkpoint(demo_results / "train" / "3d_fullres" / "fold_1" / "checkpoint_final.pt")
    exported = load_checkpoint(folder / "fold_1" / "checkpoint_final.pth")
    theirs = load_checkpoint(MODEL / "fold_1" / "checkpoint_final.pth")
    assert set(PREDICTOR_KEYS) <= set(exported) and set(PREDICTOR_KEYS) <= set(theirs)
    assert exported["trainer_name"] == "nnUNetTrainer" and exported["init_args"]["configuration"] == "3d_fullres"
    assert type(exported["inference_allowed_mirroring_axes"]) is type(theirs["inference_allowed_mirroring_axes"])
    assert all(torch.equal(exported["network_weights"][k], v) for k, v in ours["network_weights"].items())
    assert torch.load(folder / "fold_1" / "checkpoint_final.pth", weights_only=True)  # no allowlist needed

    segflow_predict(demo_images, tmp_path / "from_results", demo_results, "-c", "3d_fullres", "--no-postprocessing")
    segflow_predict(demo_images, tmp_path / "from_export", folder)
    for case in ("demo_500", "demo_501", "demo_502"):
        name = f"{case}.nii.gz"
        assert np.array_equal(labels(tmp_path / "from_export" / name), labels(tmp_path / "from_results" / name))


def test_export_refuses_monai_networks_and_an_existing_folder(demo_results, tmp_path, capsys):
    def failed_export(*args) -> str:
        with pytest.raises(SystemExit):
            main(["export-nnunet", "-m", str(demo_results), "-o", str(tmp_path), *args])
        return capsys.readouterr().err

    refusal = failed_export("-c", "3d_fullres-segresnet")
    assert "is MONAI SegResNetDS (Auto3DSeg's segresnet), which nnU-Net v2 cannot build" in refusal
    (tmp_path / "nnUNetTrainer__nnUNetPlans__2d").mkdir()
    message = failed_export("-c", "2d")
    assert "nnUNetTrainer__nnUNetPlans__2d] exists already" in message, message


def test_an_export_that_fails_leaves_no_folder(demo_results, tmp_path, capsys):
    """A damaged fold checkpoint stops the export with its name, and neither the folder nor a part of it stays."""
    damaged = tmp_path / "results"
    shutil.copytree(demo_results, damaged)
    checkpoint = damaged / "train" / "2d" / "fold_1" / "checkpoint_final.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(SystemExit):
        main(["export-nnunet", "-m", str(damaged), "-o", str(tmp_path / "nnunet"), "-c", "2d"])
    assert f"file {checkpoint}" in capsys.readouterr().err
    assert list((tmp_path / "nnunet").iterdir()) == []


@pytest.mark.parametrize("plans_name", ["/../../../escaped", "..", "a/b"])
def test_export_refuses_a_plans_name_that_would_leave_the_output_folder(demo_results, tmp_path, capsys, plans_name):
    results = tmp_path / "deep" / "er" / "results"
    shutil.copytree(demo_results, results)
    plans = json.loads((results / "plans.json").read_text())
    (results / "plans.json").write_text(json.dumps({**plans, "plans_name": plans_name}))
    before = sorted(tmp_path.rglob("*"))
    out = tmp_path / "deep" / "er" / "nnunet"
    with pytest.raises(SystemExit):
        main(["export-nnunet", "-m", str(results), "-o", str(out), "-c", "2d"])
    message = capsys.readouterr().err
    assert f"file {results / 'plans.json'}" in message and f"plans name {plans_name!r} cannot name a folder" in message
    assert sorted(tmp_path.rglob("*")) == before
