"""The bad-input corpus: each function writes one defect into a clean generated dataset (6 cases, 2
channels, labels background/outer/inner; see ``conftest.write_raw_dataset``), and the tables say what the
verification must answer: an error naming the offending file and the problem, or a warning that names it.

``ERRORS``: defect -> (words the error must contain, the offending file first; whether the check is per
case, so a job starts and must leave no output, or the run stops before any job).
``WARNINGS``: defect -> (file, word) of the single warning in verify_report.json.
``MSD_LISTS``: defects of an MSD dataset.json's ``training`` list -> words of the error.
"""

import json
import shutil

import numpy as np
import SimpleITK as sitk
from conftest import blob_case, write_case

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


def reader_segflow_does_not_reproduce(root):
    meta = json.loads((root / "dataset.json").read_text())
    meta["overwrite_image_reader_writer"] = "NibabelIOWithReorient"
    (root / "dataset.json").write_text(json.dumps(meta))


def files_listed_in_dataset_json(root):
    meta = json.loads((root / "dataset.json").read_text())
    meta["dataset"] = {BROKEN: {"images": [f"imagesTr/{BROKEN}_0000.nii.gz"], "label": f"labelsTr/{BROKEN}.nii.gz"}}
    (root / "dataset.json").write_text(json.dumps(meta))


ERRORS = {
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
    reader_segflow_does_not_reproduce: (["dataset.json", "NibabelIOWithReorient", "reorients"], False),
    files_listed_in_dataset_json: (["dataset.json", "under 'dataset'", "symbolic links are accepted"], False),
}


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


def duplicate_case(meta):
    meta["training"].append(meta["training"][3])


def case_outside_the_folder(meta):
    meta["training"][3] = {"image": "./imagesTr/../../case_003.nii.gz", "label": "./labelsTr/case_003.nii.gz"}


MSD_LISTS = {duplicate_case: "lists case 'case_003' twice", case_outside_the_folder: "'./imagesTr/../../case_003"}
