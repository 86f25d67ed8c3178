"""Batches of cases: how many `case_batches: auto` makes, and the manifests that stand for a batch's files."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from segflow.batches import assign_batches, auto_batch_count, files_in_manifests, write_manifest
from segflow.errors import InputError
from segflow.io import save_json
from segflow.jobs import files_by_case, run_batch_job, run_job


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


def batch_job(tmp_path, cases):
    """What a batch job's script gets from Snakemake: its cases, its per-case file patterns, log, manifest."""
    return SimpleNamespace(
        params=SimpleNamespace(cases=cases, outputs={"records": f"{tmp_path}/crop/{{case}}.json"}),
        log=[str(tmp_path / "job.log")],
        output=SimpleNamespace(manifest=str(tmp_path / "batches" / "b000.json")),
    )


def write_until(bad_case):
    def write_records(cases, records):
        for case, path in zip(cases, records, strict=True):
            if case == bad_case:
                raise InputError("unreadable", case=case, fix="replace it")
            save_json({"case": case}, path)

    return write_records


def test_a_batch_job_lists_its_cases_files_in_its_manifest_once_all_are_written(tmp_path):
    job = batch_job(tmp_path, ["a", "b"])
    run_batch_job(job, write_until(None), job.params.cases)
    assert json.loads(Path(job.output.manifest).read_text()) == {
        "cases": ["a", "b"],
        "records": [f"{tmp_path}/crop/a.json", f"{tmp_path}/crop/b.json"],
    }


def test_a_failed_batch_job_leaves_neither_its_cases_files_nor_a_manifest(tmp_path, capsys):
    job = batch_job(tmp_path, ["a", "b", "c"])
    with pytest.raises(SystemExit):
        run_batch_job(job, write_until("b"), job.params.cases)
    assert "case 'b'" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.json")), "the failed batch left files behind"


def test_a_reader_names_a_file_deleted_after_its_batch_and_the_manifest_to_delete(tmp_path, capsys):
    job = batch_job(tmp_path, ["a", "b"])
    run_batch_job(job, write_until(None), job.params.cases)
    (tmp_path / "crop" / "b.json").unlink()
    with pytest.raises(SystemExit):
        run_job(str(tmp_path / "reader.log"), len, [], reads=[job.output.manifest])
    message = capsys.readouterr().err.strip()
    assert message.startswith("segflow: bad input: [case 'b', file ") and "\n" not in message
    assert f"Fix: delete {job.output.manifest} and run again" in message
    assert run_job(str(tmp_path / "reader.log"), len, [1, 2], reads=[]) == 2
