"""Broken inputs from the corpus (corpus.py), one defect each: the run fails (or warns) naming the file and
the problem, and the failing job leaves no output behind."""

import json

import pytest
from conftest import blob_case, run_snakemake, the_one_line, write_case, write_msd_dataset_json, write_raw_dataset
from corpus import BROKEN, ERRORS, MSD_LISTS, WARNINGS

from segflow.batches import assign_batches
from segflow.io import write_image

GEOMETRY = {"spacing": [1.0, 1.0, 1.0], "origin": [0.0, 0.0, 0.0], "direction": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]}


@pytest.mark.parametrize("defect", list(ERRORS), ids=[f.__name__ for f in ERRORS])
def test_bad_input_fails_with_a_clear_message(tmp_path, defect):
    root = tmp_path / "Dataset555_Broken"
    cases = write_raw_dataset(root, n_cases=6, channels=2)
    defect(root)
    result = run_snakemake(tmp_path, config={"dataset": str(root), "case_batches": 3}, check=False)
    assert result.returncode != 0
    words, per_case = ERRORS[defect]
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
        assert "Fix:" in the_one_line(result.stdout)


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
    message = the_one_line(result.stdout)
    assert f"file {root / 'dataset.json'}" in message and MSD_LISTS[defect] in message, message


def test_msd_folder_of_nrrd_files_says_what_the_msd_layout_reads(tmp_path):
    """An MSD-form folder holding NRRD images: the message names the folder, says the layout is .nii.gz only
    and how to bring other formats (an nnU-Net v2 raw folder with its file_ending), with no traceback."""
    root = tmp_path / "Task55_Nrrd"
    cases = [f"case_{i:03d}" for i in range(2)]
    for i, case in enumerate(cases):
        image, label = blob_case(i)
        write_image(image[0], GEOMETRY, root / "imagesTr" / f"{case}.nrrd")
        write_image(label, GEOMETRY, root / "labelsTr" / f"{case}.nrrd")
    write_msd_dataset_json(root, cases)
    result = run_snakemake(tmp_path, "-n", config={"dataset": str(root)}, check=False)
    assert result.returncode != 0
    the_one_line(result.stdout)
    for words in (f"file {root / 'imagesTr'}", "not .nii.gz (e.g. case_000.nrrd)", "file_ending", "nnU-Net v2 raw"):
        assert words in result.stdout, result.stdout[-2000:]
    assert "numTraining" not in result.stdout.split("Fix:")[0] and "Traceback" not in result.stdout
