"""Broken inputs, one generated defect each: the run fails naming the case and the problem, and the failing
job leaves no output behind."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import blob_case, run_snakemake, write_case, write_msd_dataset_json, write_raw_dataset

from segflow.batches import assign_batches
from segflow.io import write_image

BROKEN = "case_003"


def geometry(spacing=(1.0, 1.0, 1.0)):
    return {"spacing": list(spacing)[::-1], "origin": [0.0] * 3, "direction": list(np.eye(3).ravel())}


def nan_image(root):
    image, label = blob_case(3)
    image[0, 5, 5, 5] = np.nan
    write_case(root, BROKEN, image, label)


def shape_mismatch(root):
    write_image(np.zeros((9, 9, 9), np.uint8), geometry(), root / "labelsTr" / f"{BROKEN}.nii.gz")


def spacing_mismatch(root):
    image, label = blob_case(3)
    write_image(label, geometry((2.0, 1.0, 1.0)), root / "labelsTr" / f"{BROKEN}.nii.gz")


def missing_channel(root):
    (root / "imagesTr" / f"{BROKEN}_0001.nii.gz").unlink()


def unknown_label(root):
    image, label = blob_case(3)
    label[label == 2] = 5
    write_case(root, BROKEN, image, label)


def truncated_file(root):
    path = root / "imagesTr" / f"{BROKEN}_0000.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def num_training(root):
    meta = json.loads((root / "dataset.json").read_text())
    meta["numTraining"] = 9
    (root / "dataset.json").write_text(json.dumps(meta))


def non_consecutive(root):
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "outer": 1, "inner": 3}
    (root / "dataset.json").write_text(json.dumps(meta))


def infinite_image(root):
    image, label = blob_case(3, channels=2)
    image[1, 4, 4, 4] = np.inf
    write_case(root, BROKEN, image, label)


def fractional_labels(root):
    image, label = blob_case(3)
    write_image(label.astype(np.float32) * 0.5, geometry(), root / "labelsTr" / f"{BROKEN}.nii.gz")


def extra_channel(root):
    shutil.copy(root / "imagesTr" / f"{BROKEN}_0000.nii.gz", root / "imagesTr" / f"{BROKEN}_0002.nii.gz")


def not_an_image(root):
    (root / "imagesTr" / f"{BROKEN}_0000.nii.gz").write_text("a text file, not an image")


def two_d_image(root):
    image, _ = blob_case(3)
    plane = {"spacing": [1.0, 1.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0]}
    write_image(image[0, 5], plane, root / "imagesTr" / f"{BROKEN}_0000.nii.gz")


def four_d_label(root):
    _, label = blob_case(3)
    series = sitk.JoinSeries([sitk.GetImageFromArray(label), sitk.GetImageFromArray(label)])
    sitk.WriteImage(series, str(root / "labelsTr" / f"{BROKEN}.nii.gz"))


def malformed_dataset_json(root):
    (root / "dataset.json").write_text('{"labels": {"background": 0,')


def dataset_json_without_labels(root):
    meta = json.loads((root / "dataset.json").read_text())
    del meta["labels"]
    (root / "dataset.json").write_text(json.dumps(meta))


# defect -> (expected words in the message: the offending file first; does the job start (per-case check) or
# does parsing fail)
CASES = {
    nan_image: ([f"{BROKEN}_0000.nii.gz", "NaN"], True),
    infinite_image: ([f"{BROKEN}_0001.nii.gz", "infinite"], True),
    shape_mismatch: ([f"labelsTr/{BROKEN}.nii.gz", "shape"], True),
    spacing_mismatch: ([f"labelsTr/{BROKEN}.nii.gz", "spacing"], True),
    missing_channel: ([f"{BROKEN}_0001", "channel 1 is missing"], False),
    extra_channel: ([f"{BROKEN}_0002.nii.gz", "beyond the 2 channels"], False),
    unknown_label: ([f"labelsTr/{BROKEN}.nii.gz", "label values [5]"], True),
    fractional_labels: ([f"labelsTr/{BROKEN}.nii.gz", "fractions"], True),
    truncated_file: ([f"{BROKEN}_0000.nii.gz", "cannot be read"], True),
    not_an_image: ([f"{BROKEN}_0000.nii.gz", "cannot be read"], True),
    two_d_image: ([f"{BROKEN}_0000.nii.gz", "[1, 14, 15]"], True),
    four_d_label: ([f"labelsTr/{BROKEN}.nii.gz", "is 4D"], True),
    num_training: (["dataset.json", "numTraining is 9", "holds 6 cases"], False),
    non_consecutive: (["dataset.json", "consecutive", "[0, 1, 3]"], False),
    malformed_dataset_json: (["dataset.json", "not valid JSON"], False),
    dataset_json_without_labels: (["dataset.json", "lacks the required keys ['labels']"], False),
}


@pytest.mark.parametrize("defect", list(CASES), ids=[f.__name__ for f in CASES])
def test_bad_input_fails_with_a_clear_message(tmp_path, defect):
    root = tmp_path / "Dataset555_Broken"
    cases = write_raw_dataset(root, n_cases=6, channels=2)
    defect(root)
    result = run_snakemake(tmp_path, config={"dataset": str(root), "case_batches": 3}, check=False)
    assert result.returncode != 0
    words, per_case = CASES[defect]
    for word in words:
        assert word in result.stdout, f"{word!r} missing from:\n{result.stdout[-3000:]}"
    out = tmp_path / "results" / root.name
    if per_case:
        batch = next(members for members in assign_batches(cases, 3).values() if BROKEN in members)
        for case in batch:
            assert not (out / "verify" / f"{case}.json").exists(), "the failing job left an output"
        assert not (out / "fingerprint.json").exists()
    else:
        assert not out.exists(), "a dataset-level error must stop the run before any job"


def origin_mismatch(root):
    _, label = blob_case(3)
    shifted = {**geometry(), "origin": [5.0, 0.0, 0.0]}
    write_image(label, shifted, root / "labelsTr" / f"{BROKEN}.nii.gz")


def direction_mismatch(root):
    image, _ = blob_case(3, channels=2)
    flipped = {**geometry(), "direction": [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0]}
    write_image(image[1], flipped, root / "imagesTr" / f"{BROKEN}_0001.nii.gz")


def empty_label_map(root):
    image, label = blob_case(3)
    write_case(root, BROKEN, image, np.zeros_like(label))


WARNINGS = {
    origin_mismatch: (f"labelsTr/{BROKEN}.nii.gz", "origin"),
    direction_mismatch: (f"{BROKEN}_0001.nii.gz", "direction"),
    empty_label_map: (f"labelsTr/{BROKEN}.nii.gz", "empty"),
}


@pytest.mark.parametrize("defect", list(WARNINGS), ids=[f.__name__ for f in WARNINGS])
def test_suspicious_input_is_a_warning_naming_the_file(tmp_path, defect):
    root = tmp_path / "Dataset555_Broken"
    write_raw_dataset(root, n_cases=6, channels=2)
    defect(root)
    target = f"results/{root.name}/verify_report.json"
    run_snakemake(tmp_path, target, config={"dataset": str(root), "case_batches": 3})
    warnings = json.loads((tmp_path / target).read_text())["warnings"]
    file, word = WARNINGS[defect]
    assert len(warnings) == 1 and file in warnings[0] and word in warnings[0] and BROKEN in warnings[0], warnings


def duplicate_case(meta):
    meta["training"].append(meta["training"][3])


def case_outside_the_folder(meta):
    meta["training"][3] = {"image": "./imagesTr/../../case_003.nii.gz", "label": "./labelsTr/case_003.nii.gz"}


MSD_LISTS = {duplicate_case: "lists case 'case_003' twice", case_outside_the_folder: "'./imagesTr/../../case_003"}


@pytest.mark.parametrize("defect", list(MSD_LISTS), ids=[f.__name__ for f in MSD_LISTS])
def test_msd_training_list_that_contradicts_the_files_is_an_error(tmp_path, defect):
    root = tmp_path / "Task55_Broken"
    cases = [f"case_{i:03d}" for i in range(6)]
    for i, case in enumerate(cases):
        write_case(root, case, *blob_case(i), layout="msd")
    write_msd_dataset_json(root, cases)
    meta = json.loads((root / "dataset.json").read_text())
    defect(meta)
    (root / "dataset.json").write_text(json.dumps(meta))
    result = run_snakemake(tmp_path, "-n", config={"dataset": str(root)}, check=False)
    assert result.returncode != 0
    message = result.stdout
    assert f"file {root / 'dataset.json'}" in message and MSD_LISTS[defect] in message, message[-2000:]
