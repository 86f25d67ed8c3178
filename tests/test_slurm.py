"""profiles/slurm against a real SLURM: the single-node cluster of tests/slurm/local_slurm.sh (partitions cpu and
gpu, two fake GPUs as gpu GRES). Where each job ran, and whether it got a GPU, is read from SLURM's own records
(``scontrol show job``, kept for an hour after a job ends), not from our logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, load, run_snakemake, scheduled_jobs, write_tiny_dataset

from segflow.batches import auto_batch_count

PROFILE = REPO / "profiles" / "slurm"
LOCAL_SLURM = REPO / "tests" / "slurm" / "local_slurm.sh"
STEADY_STATUS_CHECKS = REPO / "tests" / "slurm" / "steady_status_checks.py"
GPU_RULES = re.compile(r"train|validate|predict_b\d+")
DEMO = "Task900_SegflowDemo"


@pytest.fixture(scope="session")
def slurm():
    """A running SLURM, or the local one started for these tests and stopped after them. It is started only
    where asked for: in CI (SEGFLOW_CI=1, where a missing SLURM fails) or with SEGFLOW_START_SLURM=1; it
    needs root and Debian (slurm-wlm and munge from apt). Anywhere else the tests are skipped."""
    if subprocess.run(["bash", str(LOCAL_SLURM), "status"], capture_output=True).returncode == 0:
        yield
        return
    ci, asked = os.environ.get("SEGFLOW_CI"), os.environ.get("SEGFLOW_START_SLURM")
    if not (ci or asked):
        pytest.skip(
            "no SLURM is running: start one (tests/slurm/local_slurm.sh start, as root on Debian) or set "
            "SEGFLOW_START_SLURM=1 to let the tests install, start and stop it"
        )
    if os.geteuid() != 0:
        message = "no local SLURM, and only root can start one (tests/slurm/local_slurm.sh start)"
    else:
        started = subprocess.run(["bash", str(LOCAL_SLURM), "start"], capture_output=True, text=True)
        if started.returncode == 0:
            yield
            subprocess.run(["bash", str(LOCAL_SLURM), "stop"], capture_output=True)
            return
        message = f"tests/slurm/local_slurm.sh start failed:\n{started.stdout}{started.stderr}"
    if ci:
        pytest.fail(message)
    pytest.skip(message)


def run_on_slurm(workdir: Path, *args, config: dict | None = None, check: bool = True):
    """The workflow through profiles/slurm. The local cluster has no accounting database, hence squeue for the
    job states; status checks start after 2 s instead of 40, and come every 2 s instead of 10 and more
    (tests/slurm/steady_status_checks.py), so the test does not idle."""
    return run_snakemake(
        workdir,
        "--profile",
        str(PROFILE),
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--seconds-between-status-checks",
        "2",
        *args,
        config=config,
        check=check,
        launcher=[str(STEADY_STATUS_CHECKS)],
    )


def slurm_records(workdir: Path) -> list[dict]:
    """SLURM's records of the jobs submitted from ``workdir``, with the rule parsed from the comment the executor
    sets (``rule_<name>`` or ``rule_<name>_wildcards_<values>``)."""
    text = subprocess.run(["scontrol", "-d", "-o", "show", "job"], capture_output=True, text=True, check=True).stdout
    records = []
    for line in text.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if fields.get("WorkDir") != str(workdir):
            continue
        rule, _, wildcards = fields["Comment"].removeprefix("rule_").partition("_wildcards_")
        fields["rule"], fields["wildcards"] = rule, wildcards
        records.append(fields)
    return records


def freeze_after_epochs(workdir: Path, configuration: str, fold: int, epochs: int, stopped: list) -> None:
    """Wait until the SLURM job training (configuration, fold) has logged ``epochs`` finished epochs, then stop
    all its processes (SIGSTOP to the batch step and every job step) and cut its time limit to a minute: from then
    on only that limit ends it, however fast or slow this machine is, and no other job runs under a limit it could
    miss on a busy machine. The later it is frozen, the less of that minute is left to wait. Appends the job id
    to ``stopped``."""
    log = workdir / "results" / DEMO / "train" / configuration / f"fold_{fold}" / "training_log.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) >= epochs:
            running = [
                r
                for r in slurm_records(workdir)
                if r["rule"] == "train" and r["wildcards"] == f"{configuration}_{fold}" and r["JobState"] == "RUNNING"
            ]
            if running:
                job = running[0]["JobId"]
                subprocess.run(["scancel", "--full", "--signal=STOP", job], check=True)
                subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=1"], check=True)
                stopped.append(job)
                return
        time.sleep(0.2)


def test_demo_on_slurm_with_a_training_killed_by_its_time_limit_matches_the_local_run(slurm, demo_run, tmp_path):
    """The demo's 3d_fullres fold 0 through profiles/slurm: every GPU job in partition gpu with a GPU allocated,
    every other job in cpu, as SLURM's own records show. The training is frozen after two of its three epochs
    and its limit cut to a minute, so SLURM kills it (TIMEOUT); the retries resubmit it and it continues after its
    last finished epoch. Everything the model depends on, and the model itself, weights included, equal those of
    the local run (which trained 2d too, and folds 0 and 1)."""
    stopped: list = []
    watcher = threading.Thread(target=freeze_after_epochs, args=(tmp_path, "3d_fullres", 0, 2, stopped), daemon=True)
    watcher.start()
    # Two batches instead of eight, one configuration and one fold: fewer submissions. No output compared below
    # depends on how cases are batched or on which other candidates and folds train.
    run_on_slurm(tmp_path, config={"case_batches": 2, "configurations": "[3d_fullres]", "folds": "[0]"})
    watcher.join()
    records = slurm_records(tmp_path)
    rules = [r["rule"] for r in records]
    trained = {(r["rule"], r["wildcards"]) for r in records if r["rule"] in ("train", "validate")}
    assert trained == {("train", "3d_fullres_0"), ("validate", "3d_fullres_0")}
    assert {"plan", "fingerprint", "crossval", "select", "report_tables"} <= set(rules)
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
    fold = tmp_path / "results" / DEMO / "train" / "3d_fullres" / "fold_0"
    logs = [p.read_text() for p in sorted(fold.glob("training_log_*.txt"))]
    finished = [[int(e) for e in re.findall(r"INFO epoch (\d+): ", log)] for log in logs]
    assert len(logs) >= 2 and sum(finished, []) == [0, 1, 2], finished
    assert finished[0] and f"after epoch {len(finished[0])}" in logs[1], logs[1][:500]
    assert_same_results(demo_run / "results" / DEMO, tmp_path / "results" / DEMO)


#: What the local run (2d and 3d_fullres, folds 0 and 1) holds that a run of 3d_fullres fold 0 alone computes
#: otherwise or not at all: the record of its config, 2d's data and models, fold 1's, the validation
#: probabilities that only ensembles keep, and what the cross-validation and the selection draw from all of them.
NOT_IN_THE_SLURM_RUN = re.compile(
    r"config\.yaml|(preprocessed|train)/2d/.*|train/[^/]+/fold_1/.*|train/[^/]+/fold_0/validation/[^/]+\.npz"
    r"|crossval/.*|selection\.json|predictions/.*|report/.*"
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


def test_bench_dry_run_on_a_small_dataset(slurm):
    """bench/dry_run.py's smoke test (it needs SLURM): both dry-runs with their jobs, and a cluster job's start-up."""
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "dry_run.py"), "--cases", "20", "--repeats", "1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for when in ("before the plan", "with the plan"):
        assert re.search(rf"20 cases, {when}, run 1: [\d.]+ s, \d+ jobs", result.stdout), result.stdout
    assert re.search(r"20 cases: a cluster job \(fingerprint\) starts its script [\d.]+ s after", result.stdout)
    assert re.search(r"^20 \| [\d.]+ s \| [\d.]+ s \(\d+\) \| [\d.]+ s \| \d+ s$", result.stdout, re.M), result.stdout
