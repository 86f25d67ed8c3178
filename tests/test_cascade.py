"""The cascade: its degraded one-hot input on hand-made arrays, and the workflow from a dataset large enough
for a 3d_lowres stage (a small GPU memory target makes the patch small) to test predictions."""

import json

import numpy as np
import SimpleITK as sitk
import torch
from conftest import blob_case, load, run_snakemake, write_case

from segflow.io import save_json, write_image
from segflow.train.cascade import (
    MoveSegAsOneHotToData,
    RandomBinaryOperator,
    RemoveRandomComponent,
    foreground_labels,
)


def test_foreground_labels_of_plain_region_and_ignore_labels():
    assert foreground_labels({"background": 0, "a": 1, "b": 2}) == [1, 2]
    assert foreground_labels({"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enh": 3}) == [1, 2, 3]
    assert foreground_labels({"background": 0, "a": 1, "ignore": 2}) == [1]


def test_previous_segmentation_becomes_one_hot_data_channels():
    data = np.zeros((2, 1, 3, 3, 3), np.float32)
    seg = np.zeros((2, 2, 3, 3, 3), np.int16)
    seg[:, 1, 0] = 1
    seg[:, 1, 2] = 2
    out = MoveSegAsOneHotToData([1, 2])(data=data, seg=seg)
    assert out["data"].shape == (2, 3, 3, 3, 3) and out["seg"].shape == (2, 1, 3, 3, 3)
    assert out["data"][:, 1, 0].all() and not out["data"][:, 1, 1:].any()
    assert out["data"][:, 2, 2].all() and not out["data"][:, 2, :2].any()


def test_binary_operators_keep_the_channels_exclusive():
    np.random.seed(0)
    data = np.zeros((4, 3, 12, 12, 12), np.float32)
    data[:, 1, 2:6, 2:6, 2:6] = 1
    data[:, 2, 6:10, 6:10, 6:10] = 1
    before = data.copy()
    out = RandomBinaryOperator([-2, -1], p_per_sample=1, p_per_label=1)(data=data)["data"]
    assert not np.array_equal(out, before)
    assert (out[:, 1] + out[:, 2]).max() <= 1
    assert set(np.unique(out)) <= {0.0, 1.0}


def test_a_random_small_component_is_removed_and_a_large_one_kept():
    np.random.seed(1)
    data = np.zeros((1, 2, 10, 10, 10), np.float32)
    data[0, 1, :6] = 1  # 60 % of the patch: never removed
    data[0, 1, 8, 8, 8] = 1  # a speck
    out = RemoveRandomComponent([-1], p_per_sample=1)(data=data)["data"]
    assert out[0, 1, 8, 8, 8] == 0 and out[0, 1, :6].all()


def test_cascade_workflow_trains_on_all_lowres_folds_and_predicts(tmp_path):
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
        "configurations": ["3d_lowres", "3d_cascade_fullres"],
        "folds": [0],
        "train": {"epochs": 2, "iterations_per_epoch": 3, "val_iterations": 1, "seed": 0, "threads": 2},
        "inference": {"mirror": False, "threads": 2},
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
    assert weights["encoder.0.0.0.weight"].shape[1] == 1 + 2, "image channel + one-hot of two labels"
    assert load(out / "crossval" / "3d_cascade_fullres" / "summary.json")["mean"].keys() == {"1", "2"}
    selection = load(out / "selection.json")
    assert set(selection["scores"]) == {"3d_lowres", "3d_cascade_fullres", "ensemble__3d_lowres__3d_cascade_fullres"}
    prediction = sitk.ReadImage(str(out / "predictions" / "new.nii.gz"))
    assert prediction.GetSize() == (44, 48, 46) and prediction.GetOrigin() == (3.0, -2.0, 1.0)
