"""Batches of cases: how many `case_batches: auto` makes, and the manifests that stand for a batch's files."""

import json

import pytest

from segflow.batches import assign_batches, auto_batch_count, files_in_manifests, write_manifest
from segflow.jobs import files_by_case


@pytest.mark.parametrize(
    ("cases", "batches"), [(0, 8), (10, 8), (512, 8), (513, 16), (1000, 16), (1025, 32), (5000, 128), (10000, 256)]
)
def test_auto_keeps_eight_batches_and_doubles_them_past_64_cases_per_batch(cases, batches):
    assert auto_batch_count(cases) == batches


def test_auto_assigns_as_the_count_it_chooses_and_keeps_batches_small():
    cases = [f"case_{i:05d}" for i in range(10000)]
    auto = assign_batches(cases, "auto")
    assert auto == assign_batches(cases, 256)
    assert sorted(c for members in auto.values() for c in members) == cases
    assert max(len(members) for members in auto.values()) < 2 * 64  # hash buckets: the average is 39


def test_a_manifest_lists_its_files_and_readers_get_them_in_case_order(tmp_path):
    batches = assign_batches([f"c{i}" for i in range(7)], 3)
    manifests = []
    for name, cases in batches.items():
        path = tmp_path / f"{name}.json"
        write_manifest(path, cases, {"records": [f"crop/{c}.json" for c in cases], "fg": [f"{c}.npy" for c in cases]})
        manifests.append(path)
    assert json.loads(manifests[0].read_text())["cases"] == next(iter(batches.values()))
    assert files_in_manifests(manifests[::-1], "records") == [f"crop/c{i}.json" for i in range(7)]
    assert files_in_manifests(manifests, "fg") == [f"c{i}.npy" for i in range(7)]


def test_a_manifest_refuses_files_that_do_not_match_its_cases(tmp_path):
    with pytest.raises(ValueError, match="records: 1 files for 2 cases"):
        write_manifest(tmp_path / "b000.json", ["a", "b"], {"records": ["a.json"]})
    assert not (tmp_path / "b000.json").exists()


def test_a_batch_jobs_flat_image_list_splits_into_its_cases_by_name():
    """One file per channel, or one RGB file for three channels; a case whose name extends another's keeps its
    own files; files of no case of the batch, or a case with none, are errors."""
    files = ["x/c1_0000.png", "x/c10_0000.png", "x/c10_0001.png", "x/c1_0000_0000.png"]
    assert files_by_case(files, ["c1", "c10", "c1_0000"], 3) == [files[:1], files[1:3], files[3:]]
    with pytest.raises(ValueError, match="files of no case"):
        files_by_case(["x/a_0000.nii.gz", "x/b_0000.nii.gz"], ["a"], 2)
    with pytest.raises(ValueError, match="case 'b': 0 channel files"):
        files_by_case(["x/a_0000.nii.gz"], ["a", "b"], 2)
    with pytest.raises(ValueError, match="expected 1 to 1"):
        files_by_case(["x/a_0000.nii.gz", "x/a_0001.nii.gz"], ["a"], 1)
