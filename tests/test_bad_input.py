"""Broken inputs, one generated defect each: the run fails naming the case and the problem, and the failing
job leaves no output behind."""

import json

import numpy as np
import pytest
from conftest import blob_case, run_snakemake, write_case, write_raw_dataset

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


# defect -> (expected words in the message, does the job start (per-case check) or does parsing fail)
CASES = {
    nan_image: (["case_003", "NaN"], True),
    shape_mismatch: (["case_003", "shape"], True),
    spacing_mismatch: (["case_003", "spacing"], True),
    missing_channel: (["case_003", "channel 1 is missing"], False),
    unknown_label: (["case_003", "label values [5]"], True),
    truncated_file: (["case_003", "cannot be read"], True),
    num_training: (["numTraining is 9", "holds 6 cases"], False),
    non_consecutive: (["consecutive", "[0, 1, 3]"], False),
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
