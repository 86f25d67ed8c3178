"""Metrics on small arrays whose answers are worked out by hand, and summary.json / CSV on real files."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from segflow.cli import main
from segflow.evaluate import (
    case_metrics,
    evaluate_folder,
    evaluated_labels,
    label_metrics,
    summarize,
    write_summary,
)
from segflow.io import write_image


def line(n, on):
    """A 1 x 1 x n mask with voxels ``on`` set."""
    mask = np.zeros((1, 1, n), bool)
    mask[0, 0, list(on)] = True
    return mask


def test_dice_and_iou_of_overlapping_lines():
    m = label_metrics(line(10, range(0, 4)), line(10, range(2, 6)), [1, 1, 1])
    assert (m["TP"], m["FP"], m["FN"], m["TN"]) == (2, 2, 2, 4)
    assert m["Dice"] == pytest.approx(0.5)
    assert m["IoU"] == pytest.approx(1 / 3)
    assert (m["n_pred"], m["n_ref"]) == (4, 4)


def test_hd95_and_surface_dice_in_millimetres():
    # Every voxel of a one-voxel-thick line is a border voxel. Prediction 5, 6, 7 lie 1, 2, 3 voxels (2, 4,
    # 6 mm at 2 mm spacing) from the reference's nearest voxel 4, and the reference 4, 3, 2 as far from 5.
    m = label_metrics(line(12, [2, 3, 4]), line(12, [5, 6, 7]), [1.0, 1.0, 2.0], tolerance=2.0)
    assert m["Dice"] == 0
    assert m["HD95"] == pytest.approx(6.0)  # 95th percentile of [2, 2, 4, 4, 6, 6]
    assert m["NSD"] == pytest.approx(2 / 6)  # the two 2 mm distances are within the tolerance


def test_identical_masks_are_perfect():
    cube = np.zeros((8, 8, 8), bool)
    cube[2:6, 2:6, 2:6] = True
    m = label_metrics(cube, cube, [1, 1, 1])
    assert (m["Dice"], m["IoU"], m["HD95"], m["NSD"]) == (1.0, 1.0, 0.0, 1.0)


def test_empty_reference_and_prediction_give_nan_and_are_left_out_of_means():
    empty = np.zeros((1, 1, 5), bool)
    m = label_metrics(empty, empty, [1, 1, 1])
    assert math.isnan(m["Dice"]) and math.isnan(m["IoU"]) and math.isnan(m["HD95"]) and math.isnan(m["NSD"])
    good = {"1": label_metrics(line(5, [1, 2]), line(5, [1, 2]), [1, 1, 1])}
    summary = summarize([{"metrics": {"1": m}}, {"metrics": good}], [1])
    assert summary["mean"]["1"]["Dice"] == 1.0
    assert summary["foreground_mean"]["Dice"] == 1.0


def test_empty_reference_with_a_prediction_scores_zero():
    m = label_metrics(np.zeros((1, 1, 5), bool), line(5, [3]), [1, 1, 1])
    assert m["Dice"] == 0 and m["IoU"] == 0 and m["NSD"] == 0
    assert math.isnan(m["HD95"])


def test_ignore_label_voxels_do_not_count():
    reference = np.array([[[0, 1, 1, 3, 3, 0]]])
    prediction = np.array([[[0, 1, 1, 1, 1, 1]]])
    metrics = case_metrics(reference, prediction, [1], [1, 1, 1], ignore_label=3)["1"]
    assert (metrics["TP"], metrics["FP"], metrics["FN"], metrics["TN"]) == (2, 1, 0, 1)


def test_regions_are_unions_of_labels():
    labels = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}
    assert evaluated_labels(labels) == [(1, 2, 3), (2, 3), 3]
    reference = np.array([[[0, 1, 2, 3]]])
    prediction = np.array([[[1, 1, 3, 2]]])
    metrics = case_metrics(reference, prediction, evaluated_labels(labels), [1, 1, 1])
    assert metrics["(1, 2, 3)"]["Dice"] == pytest.approx(6 / 7)
    assert metrics["(2, 3)"]["Dice"] == 1.0
    assert metrics["3"]["Dice"] == 0.0


def test_foreground_mean_is_the_mean_over_labels(tmp_path):
    geometry = {"spacing": [1.0, 1.0, 1.0], "origin": [0.0, 0.0, 0.0], "direction": np.eye(3).flatten().tolist()}
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    reference = np.zeros((4, 4, 4), np.uint8)
    reference[:2] = 1
    reference[2:] = 2
    prediction = reference.copy()
    prediction[3] = 1  # label 2 loses half its voxels to label 1
    write_image(reference, geometry, tmp_path / "ref" / "a.nii.gz")
    write_image(prediction, geometry, tmp_path / "pred" / "a.nii.gz")
    write_image(reference, geometry, tmp_path / "ref" / "b.nii.gz")  # no prediction: skipped
    summary = evaluate_folder(tmp_path / "ref", tmp_path / "pred", [1, 2], ".nii.gz")
    assert len(summary["metric_per_case"]) == 1
    assert summary["mean"]["1"]["Dice"] == pytest.approx(2 * 32 / (32 + 48))
    assert summary["mean"]["2"]["Dice"] == pytest.approx(2 * 16 / (16 + 32))
    assert summary["foreground_mean"]["Dice"] == pytest.approx((0.8 + 2 / 3) / 2)
    write_summary(summary, tmp_path / "summary.json", tmp_path / "per_case.csv")
    assert json.loads((tmp_path / "summary.json").read_text())["mean"]["2"]["TP"] == 16
    table = pd.read_csv(tmp_path / "per_case.csv")
    assert list(table["label"]) == [1, 2] and table["Dice"].iloc[0] == pytest.approx(0.8)

    main(["evaluate", "-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-l", "1", "2"])
    from_command = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert from_command["foreground_mean"]["Dice"] == pytest.approx(summary["foreground_mean"]["Dice"])
    assert (tmp_path / "pred" / "per_case.csv").is_file()


def segflow_command(*args):
    """``segflow ARGS`` as a user runs it: exit status and everything it printed."""
    result = subprocess.run([sys.executable, "-m", "segflow.cli", *args], capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.slow
def test_commands_report_missing_and_unreadable_files_in_one_line(tmp_path):
    geometry = {"spacing": [1.0, 1.0, 1.0], "origin": [0.0, 0.0, 0.0], "direction": np.eye(3).flatten().tolist()}
    for folder in ("ref", "pred"):
        (tmp_path / folder).mkdir()
    write_image(np.ones((4, 4, 4), np.uint8), geometry, tmp_path / "pred" / "a.nii.gz")
    evaluate = ["evaluate", "-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-l", "1"]
    cases = {
        "reference missing": (evaluate, str(tmp_path / "ref" / "a.nii.gz")),
        "folder missing": (
            ["evaluate", "-ref", str(tmp_path / "nowhere"), "-pred", str(tmp_path / "pred"), "-l", "1"],
            str(tmp_path / "nowhere"),
        ),
        "dataset.json missing": (
            [*evaluate[:5], "-dj", str(tmp_path / "dataset.json")],
            str(tmp_path / "dataset.json"),
        ),
        "model missing": (
            ["predict", "-i", str(tmp_path / "pred"), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "model")],
            str(tmp_path / "model" / "plans.json"),
        ),
    }
    (tmp_path / "ref" / "b.nii.gz").write_bytes(b"not an image")
    (tmp_path / "pred" / "b.nii.gz").write_bytes(b"not an image")
    (tmp_path / "ref" / "a.nii.gz").unlink(missing_ok=True)
    for name, (args, file) in cases.items():
        status, output = segflow_command(*args)
        assert status == 1, (name, output)
        assert file in output and "Traceback" not in output and len(output.strip().splitlines()) == 1, (name, output)
    # An unreadable reference: the reader's error, naming the file.
    write_image(np.ones((4, 4, 4), np.uint8), geometry, tmp_path / "ref" / "a.nii.gz")
    status, output = segflow_command(*evaluate)
    assert status == 1 and str(tmp_path / "ref" / "b.nii.gz") in output and "cannot be read" in output, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
