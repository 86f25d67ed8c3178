"""profiles/slurm against a real SLURM: the single-node cluster of tests/slurm/local_slurm.sh (partitions cpu and
gpu, two fake GPUs as gpu GRES; fixtures and helpers in slurm_cluster.py). Where each job ran, and whether it got a
GPU, is read from SLURM's own records, not from our logs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from conftest import REPO, load, scheduled_jobs, write_tiny_dataset
from slurm_cluster import DEMO, run_on_slurm

from segflow.batches import auto_batch_count

GPU_RULES = re.compile(r"train|validate|predict_b\d+|budget")


def test_demo_on_slurm_with_a_training_killed_by_its_time_limit_matches_the_local_run(slurm_demo_run, demo_run):
    """The demo's 3d_fullres fold 0 through profiles/slurm: every GPU job in partition gpu with a GPU allocated,
    every other job in cpu, as SLURM's own records show. The training is frozen after two of its three epochs
    and its limit cut to a minute, so SLURM kills it (TIMEOUT); the retries resubmit it and it continues after its
    last finished epoch. Everything the model depends on, and the model itself, weights included, equal those of
    the local run (which trained 2d too, and folds 0 and 1). The SLURM run started with the session."""
    slurm_demo_run.finish()
    workdir, stopped, records = slurm_demo_run.workdir, slurm_demo_run.stopped, slurm_demo_run.records
    rules = [r["rule"] for r in records]
    trained = {(r["rule"], r["wildcards"]) for r in records if r["rule"] in ("train", "validate")}
    assert trained == {("train", "3d_fullres_0"), ("validate", "3d_fullres_0")}
    assert "fingerprint" in rules and "report_overlays" in rules and "budget" in rules  # timed where training runs
    # Bookkeeping ran on the submit host (the Snakefile's localrules), not as cluster jobs.
    local = ("plan", "crossval", "select", "report_tables")
    assert not set(local) & set(rules), rules
    output = slurm_demo_run.output.read_text()
    assert all(re.search(rf"^local(rule|checkpoint) {rule}:", output, re.M) for rule in local), output[-3000:]
    assert any(r.startswith("predict_b") for r in rules) and any(r.startswith("preprocess_b") for r in rules)
    # A batch's conversion, verification and crop went as one submission (the group cases_bNNN).
    groups = sorted(r for r in rules if r.startswith("cases_b"))
    assert groups == [f"cases_b00{b}_convert_b00{b}_crop_b00{b}_verify_b00{b}" for b in (0, 1)], rules
    by_job = {r["JobId"]: r for r in records}
    assert len(stopped) == 1 and by_job[stopped[0]]["JobState"] == "TIMEOUT", stopped
    for record in records:
        gres = record.get("JOB_GRES", "(null)")
        if GPU_RULES.fullmatch(record["rule"]):
            assert record["Partition"] == "gpu" and gres.startswith("gpu:"), record
        else:
            assert record["Partition"] == "cpu" and "gpu" not in gres, record
        if record["JobId"] == stopped[0]:
            assert record["TimeLimit"] == "00:01:00", record
            continue
        assert record["JobState"] == "COMPLETED", record
        if record["rule"] == "train":
            assert record["TimeLimit"] == "00:30:00", record  # the demo config's runtime_minutes
    frozen = [r for r in records if r["rule"] == "train" and r["wildcards"] == "3d_fullres_0"]
    assert len(frozen) == 2, frozen  # the frozen attempt and its resubmission
    # The frozen training's attempts, each with its own log: every epoch once, and the second attempt resumes
    # right after the epochs the first one finished.
    fold = workdir / "results" / DEMO / "train" / "3d_fullres" / "fold_0"
    logs = [p.read_text() for p in sorted(fold.glob("training_log_*.txt"))]
    finished = [[int(e) for e in re.findall(r"INFO epoch (\d+): ", log)] for log in logs]
    assert len(logs) >= 2 and sum(finished, []) == [0, 1, 2], finished
    assert finished[0] and f"after epoch {len(finished[0])}" in logs[1], logs[1][:500]
    assert_same_results(demo_run / "results" / DEMO, workdir / "results" / DEMO)


#: What the local run (2d and 3d_fullres, folds 0 and 1) holds that a run of 3d_fullres fold 0 alone computes
#: otherwise or not at all: the record of its config, 2d's data and models, fold 1's, the validation
#: probabilities that only ensembles keep, and what the cross-validation and the selection draw from all of them.
NOT_IN_THE_SLURM_RUN = re.compile(
    r"config\.yaml|(preprocessed|train)/2d/.*|train/[^/]+/fold_1/.*|train/[^/]+/fold_0/validation/[^/]+\.npz"
    r"|crossval/.*|selection\.json|predictions/.*|report/.*"
    r"|budget\.json"  # timings, and the local run's candidates and folds
)


def assert_same_results(expected: Path, actual: Path) -> None:
    """Every result file of the local run that the SLURM run computes too exists there with the same content:
    arrays and images voxel for voxel, checkpoints weight for weight, JSON value for value (timings, logs and the
    batch manifests aside: this test's SLURM run has 2 batches, the local run case_batches' default)."""
    compared = []
    for path in sorted(expected.rglob("*")):
        relative = path.relative_to(expected)
        bookkeeping = relative.parts[0] in ("logs", "benchmarks", "batches")
        if path.is_dir() or bookkeeping or path.suffix in (".png", ".csv", ".txt"):
            continue
        if NOT_IN_THE_SLURM_RUN.fullmatch(str(relative)):
            continue
        other = actual / relative
        assert other.exists(), f"{relative} is missing from the SLURM run"
        if path.name.endswith(".nii.gz"):
            a, b = nib.load(path), nib.load(other)
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj), err_msg=str(relative))
            np.testing.assert_array_equal(a.affine, b.affine, err_msg=str(relative))
        elif path.suffix in (".npy", ".npz"):
            a, b = np.load(path, allow_pickle=False), np.load(other, allow_pickle=False)
            for key in a.files if path.suffix == ".npz" else [None]:
                np.testing.assert_array_equal(a[key] if key else a, b[key] if key else b, err_msg=str(relative))
        elif path.suffix == ".pt":
            a, b = (torch.load(p, weights_only=True)["network_weights"] for p in (path, other))
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]), f"{relative}: {key} differs"
        elif path.suffix == ".json":
            assert without_paths(load(path), expected) == without_paths(load(other), actual), str(relative)
        compared.append(str(relative))
    assert len(compared) > 100
    fold = "train/3d_fullres/fold_0"
    assert {f"{fold}/checkpoint_final.pt", f"{fold}/validation/summary.json", "plans.json"} <= set(compared), compared


def without_paths(value, root: Path):
    """A JSON value with the run's own folder removed from its strings (summaries name their files)."""
    return json.loads(json.dumps(value).replace(str(root.parent.parent), "WORKDIR"))


def test_dry_run_of_a_thousand_cases_on_slurm_submits_batches_not_cases(slurm, tmp_path):
    dataset = tmp_path / "Dataset999_Many"
    write_tiny_dataset(dataset, 1000)
    dry = run_on_slurm(tmp_path, "-n", config={"dataset": str(dataset)})
    jobs = scheduled_jobs(dry.stdout)
    per_case_stages = ("verify", "crop")
    assert auto_batch_count(1000) == 16  # case_batches: auto
    for stage in per_case_stages:
        batches = sorted(rule for rule in jobs if rule.startswith(f"{stage}_b"))
        assert batches == [f"{stage}_b{i:03d}" for i in range(16)], jobs
    # Until the plan exists, the rest of the DAG is the plan's checkpoint: 16 + 16 per-case jobs, not 2 000.
    assert sum(jobs.values()) < 45, jobs


def test_bench_dry_run_on_a_small_dataset(slurm, plain_python):
    """bench/dry_run.py's smoke test (it needs SLURM): the dry-runs of four states of a run with either profile
    and with a plain install's Python, their jobs, and a cluster job's start-up."""
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "dry_run.py"), "--cases", "20", "--repeats", "1"]
        + ["--plain-python", plain_python],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = {}
    for state in ("fresh", "per-case stages done", "planned", "preprocessed"):
        for profile in ("default", "slurm", "default, plain install"):
            found = re.search(rf"20 cases, {state}, {profile}, run 1: [\d.]+ s, (\d+) jobs", result.stdout)
            assert found, result.stdout
            jobs[state, profile] = int(found[1])
        assert jobs[state, "default"] == jobs[state, "slurm"] == jobs[state, "default, plain install"]
    # each state has less left to do than the one before it, the plan adding the stages that follow it
    assert jobs["fresh", "default"] > jobs["per-case stages done", "default"]
    assert jobs["planned", "default"] > jobs["preprocessed", "default"] > jobs["per-case stages done", "default"]
    assert re.search(r"20 cases: a cluster job \(fingerprint\) starts its script [\d.]+ s after", result.stdout)
    row = r"^20( \| [\d.]+ s){12} \| [\d.]+ s \| \d+ s \(\d+ jobs once planned\)$"
    assert re.search(row, result.stdout, re.M), result.stdout
