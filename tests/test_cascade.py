"""The cascade: its degraded one-hot input on hand-made arrays, and the workflow from a dataset large enough
for a 3d_lowres stage (a small GPU memory target makes the patch small) to test predictions."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import blob_case, load, run_snakemake, write_case

import segflow.predict
from segflow.io import save_json, write_image
from segflow.layout import FINAL_CHECKPOINT
from segflow.plans import PlanConfiguration
from segflow.resample import resample
from segflow.train.augment import validation_pipeline
from segflow.train.cascade import foreground_labels
from segflow.validate import next_stage_segmentation


def test_foreground_labels_of_plain_region_and_ignore_labels():
    assert foreground_labels({"background": 0, "a": 1, "b": 2}) == [1, 2]
    assert foreground_labels({"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enh": 3}) == [1, 2, 3]
    assert foreground_labels({"background": 0, "a": 1, "ignore": 2}) == [1]


def test_previous_segmentation_becomes_one_hot_image_channels():
    """(Its random degradation in training is batchgeneratorsv2's, compared with nnunetv2's pipeline in
    test_augment.py.)"""
    image = torch.zeros((1, 3, 3, 3))
    seg = torch.zeros((2, 3, 3, 3), dtype=torch.int16)
    seg[0, 1] = -1
    seg[1, 0] = 1
    seg[1, 2] = 2
    out = validation_pipeline([1, 2])(image=image, segmentation=seg)
    assert out["image"].shape == (3, 3, 3, 3) and out["segmentation"].shape == (1, 3, 3, 3)
    assert out["image"][1, 0].all() and not out["image"][1, 1:].any()
    assert out["image"][2, 2].all() and not out["image"][2, :2].any()
    assert out["segmentation"].min() == 0, "label -1 (outside the body) becomes background"


def test_next_stage_maps_decide_separate_z_from_the_lowres_spacing_alone():
    """Lowres spacing 2.9 x 1 x 1 is not anisotropic (ratio < 3); the fullres grid's 2.9 x 0.8 x 0.8 would
    be. nnunetv2 resamples with the lowres spacing as source and target, so: no separate z."""
    kwargs = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    lowres = {
        "data_identifier": "nnUNetPlans_3d_lowres",
        "spacing": [2.9, 1.0, 1.0],
        "resampling_fn_probabilities_kwargs": kwargs,
    }
    plans = {
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "foreground_intensity_properties_per_channel": {"0": {}},
        "configurations": {"3d_lowres": lowres},
    }
    labels = {"labels": {"background": 0, "a": 1, "b": 2}}
    logits = np.random.default_rng(0).normal(size=(3, 5, 8, 8)).astype(np.float32)
    shape = (9, 10, 10)
    ours = next_stage_segmentation(logits, PlanConfiguration.of(plans, "3d_lowres"), shape, labels)
    joint = resample(logits, shape, [2.9, 1.0, 1.0], [2.9, 1.0, 1.0], **kwargs).argmax(0)
    separate = resample(logits, shape, [2.9, 1.0, 1.0], [2.9, 0.8, 0.8], **kwargs).argmax(0)
    assert ours.shape == (1, *shape)
    np.testing.assert_array_equal(ours[0], joint)
    assert not np.array_equal(joint, separate), "the two decisions must differ for this test to mean anything"


@pytest.mark.slow
def test_cascade_workflow_trains_on_all_lowres_folds_and_predicts(tmp_path, monkeypatch):
    root = tmp_path / "Dataset077_Blobs"
    cases = [f"blob_{i:03d}" for i in range(6)]
    for i, case in enumerate(cases):
        image, label = blob_case(i, shape=(48, 48, 48))
        write_case(root, case, image, label)
    image, _ = blob_case(50, shape=(46, 48, 44))
    identity = np.eye(3).flatten().tolist()
    geometry = {"spacing": [1.0, 1.0, 1.0], "origin": [3.0, -2.0, 1.0], "direction": identity}
    write_image(image[0], geometry, root / "imagesTs" / "new_0000.nii.gz")
    save_json(
        {
            "channel_names": {"0": "MR"},
            "labels": {"background": 0, "outer": 1, "inner": 2},
            "numTraining": len(cases),
            "file_ending": ".nii.gz",
        },
        root / "dataset.json",
    )
    settings = {
        "dataset": str(root),
        "gpu_memory_target_gb": 0.02,
        "case_batches": 2,
        "configurations": ["3d_lowres", "3d_cascade_fullres"],
        "folds": [0],
        "train": {"epochs": 1, "iterations_per_epoch": 1, "val_iterations": 1, "seed": 0, "threads": 1},
        "inference": {"mirror": False, "threads": 1},
    }
    (tmp_path / "cascade.yaml").write_text(json.dumps(settings))
    run_snakemake(tmp_path, "--configfile", str(tmp_path / "cascade.yaml"))
    out = tmp_path / "results" / "Dataset077_Blobs"
    plans = load(out / "plans.json")
    assert plans["configurations"]["3d_lowres"]["next_stage"] == "3d_cascade_fullres"
    cascade_final = out / "train" / "3d_cascade_fullres" / "fold_0" / "checkpoint_final.pt"
    for fold in range(5):  # all five lowres folds, although the config trains fold 0 only
        validation = out / "train" / "3d_lowres" / f"fold_{fold}" / "validation"
        for case in load(out / "splits.json")[fold]["val"]:
            previous = np.load(validation / "next_stage" / f"{case}.npy", allow_pickle=False)
            fullres = np.load(out / "preprocessed" / "3d_fullres" / f"{case}.npy", mmap_mode="r")
            assert previous.shape == (1, *fullres.shape[1:]) and set(np.unique(previous)) <= {0, 1, 2}
        assert (validation / "summary.json").stat().st_mtime < cascade_final.stat().st_mtime
    weights = torch.load(cascade_final, weights_only=True)["network_weights"]
    assert weights["encoder.stages.0.0.convs.0.conv.weight"].shape[1] == 1 + 2, "image channel + one-hot of two labels"
    assert load(out / "crossval" / "3d_cascade_fullres" / "summary.json")["mean"].keys() == {"1", "2"}
    selection = load(out / "selection.json")
    assert set(selection["scores"]) == {"3d_lowres", "3d_cascade_fullres", "ensemble__3d_lowres__3d_cascade_fullres"}
    prediction = sitk.ReadImage(str(out / "predictions" / "new.nii.gz"))
    assert prediction.GetSize() == (44, 48, 46) and prediction.GetOrigin() == (3.0, -2.0, 1.0)
    # segflow predict's models: the cascade and its previous stage read their one plans file once
    read = []
    monkeypatch.setattr(segflow.predict, "load_json", lambda path: read.append(str(path)) or load(path))
    predictor = segflow.predict.CasePredictor.of_results(out, ["3d_cascade_fullres"], [0], FINAL_CHECKPOINT, "cpu")
    assert set(predictor.predictors) == {"3d_lowres", "3d_cascade_fullres"}
    assert [path for path in read if "plans" in path] == [str(out / "plans.json")]
