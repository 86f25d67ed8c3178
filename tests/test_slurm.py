"""profiles/slurm against a real SLURM: the single-node cluster of tests/slurm/local_slurm.sh (partitions cpu and
gpu, two fake GPUs as gpu GRES). Where each job ran, and whether it got a GPU, is read from SLURM's own records
(``scontrol show job``, kept for an hour after a job ends), not from our logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, load, run_snakemake, scheduled_jobs, write_tiny_dataset

PROFILE = REPO / "profiles" / "slurm"
LOCAL_SLURM = REPO / "tests" / "slurm" / "local_slurm.sh"
GPU_RULES = re.compile(r"train|validate|predict_b\d+")
DEMO = "Task900_SegflowDemo"


@pytest.fixture(scope="session")
def slurm():
    """The local SLURM, started if this process may (root). In CI (SEGFLOW_CI set) a missing SLURM fails."""
    if subprocess.run(["bash", str(LOCAL_SLURM), "status"], capture_output=True).returncode == 0:
        return
    if os.geteuid() == 0:
        started = subprocess.run(["bash", str(LOCAL_SLURM), "start"], capture_output=True, text=True)
        if started.returncode == 0:
            return
        message = f"tests/slurm/local_slurm.sh start failed:\n{started.stdout}{started.stderr}"
    else:
        message = "no local SLURM, and only root can start one (tests/slurm/local_slurm.sh start)"
    if os.environ.get("SEGFLOW_CI"):
        pytest.fail(message)
    pytest.skip(message)


def run_on_slurm(workdir: Path, *args, config: dict | None = None, check: bool = True):
    """The workflow through profiles/slurm. The local cluster has no accounting database, hence squeue for the
    job states; status checks start after 2 s instead of 40 so the test does not idle."""
    return run_snakemake(
        workdir,
        "--profile",
        str(PROFILE),
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        *args,
        config=config,
        check=check,
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
        fields["rule"] = fields["Comment"].removeprefix("rule_").split("_wildcards_")[0]
        records.append(fields)
    return records


def test_demo_on_slurm_runs_gpu_jobs_on_the_gpu_partition_and_matches_the_local_run(slurm, demo_run, tmp_path):
    # Two batches instead of eight: fewer submissions; the outputs do not depend on how cases are batched.
    run_on_slurm(tmp_path, config={"case_batches": 2})
    records = slurm_records(tmp_path)
    rules = [r["rule"] for r in records]
    assert sorted(r for r in rules if r in ("train", "validate")) == ["train"] * 4 + ["validate"] * 4
    assert {"plan", "fingerprint", "crossval", "ensemble", "select"} <= set(rules)
    assert any(r.startswith("predict_b") for r in rules) and any(r.startswith("preprocess_3d_fullres_b") for r in rules)
    # A batch's conversion, verification and crop went as one submission (the group cases_bNNN).
    groups = sorted(r for r in rules if r.startswith("cases_b"))
    assert groups == [f"cases_b00{b}_convert_b00{b}_crop_b00{b}_verify_b00{b}" for b in (0, 1)], rules
    for record in records:
        assert record["JobState"] == "COMPLETED", record
        gres = record.get("JOB_GRES", "(null)")
        if GPU_RULES.fullmatch(record["rule"]):
            assert record["Partition"] == "gpu" and gres.startswith("gpu:"), record
        else:
            assert record["Partition"] == "cpu" and "gpu" not in gres, record
    assert_same_results(demo_run / "results" / DEMO, tmp_path / "results" / DEMO)


def assert_same_results(expected: Path, actual: Path) -> None:
    """Every result file of the local run exists in the SLURM run with the same content: arrays and images
    voxel for voxel, checkpoints weight for weight, JSON value for value (timings and logs aside)."""
    compared = 0
    for path in sorted(expected.rglob("*")):
        relative = path.relative_to(expected)
        if path.is_dir() or relative.parts[0] in ("logs", "benchmarks") or path.suffix in (".png", ".csv", ".txt"):
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
        compared += 1
    assert compared > 100


def without_paths(value, root: Path):
    """A JSON value with the run's own folder removed from its strings (summaries name their files)."""
    return json.loads(json.dumps(value).replace(str(root.parent.parent), "WORKDIR"))


def test_training_killed_by_its_time_limit_is_resubmitted_and_resumes(slurm, tmp_path):
    """A one-minute limit for a training of several minutes: SLURM kills the job (TIMEOUT), the retries
    resubmit it, and each attempt continues after the last finished epoch.

    Sized so that neither a fast nor a busy machine changes the outcome: an epoch takes 3-3.5 s on an idle
    2-core machine, so the first attempt (killed after 60-90 s) cannot finish 45 epochs unless the machine
    is 1.7 times faster; an attempt makes progress as long as start-up plus one epoch fits in a minute,
    and 20 attempts finish the training even on a machine several times slower than this one."""
    epochs = 45
    settings = tmp_path / "short_limit.yaml"
    settings.write_text(
        json.dumps(
            {
                "configurations": ["3d_fullres"],
                "folds": [0],
                "test_images": None,
                "train": {"epochs": epochs, "iterations_per_epoch": 3, "val_iterations": 1},
            }
        )
    )
    # The data locally; only the training goes to SLURM.
    data = [f"results/{DEMO}/preprocessed/3d_fullres/demo_{i:03d}.npy" for i in range(10)]
    run_snakemake(tmp_path, *data, f"results/{DEMO}/splits.json", "--configfile", str(settings))
    fold = tmp_path / "results" / DEMO / "train" / "3d_fullres" / "fold_0"
    # Relative to the working directory, and before the options that take several values.
    target = str((fold / "checkpoint_final.pt").relative_to(tmp_path))
    run_on_slurm(
        tmp_path, target, "--configfile", str(settings), "--set-resources", "train:runtime=1", "--retries", "20"
    )
    attempts = sorted((r for r in slurm_records(tmp_path) if r["rule"] == "train"), key=lambda r: int(r["JobId"]))
    states = [r["JobState"] for r in attempts]
    assert states[-1] == "COMPLETED" and "TIMEOUT" in states and len(states) >= 2, states
    assert all(r["TimeLimit"] == "00:01:00" and r["Partition"] == "gpu" for r in attempts)
    # Each attempt's own log: every finished epoch once, and each attempt after the first resumes right after
    # the last epoch the one before it finished.
    logs = [p.read_text() for p in sorted(fold.glob("training_log_*.txt"))]
    assert len(logs) == len(states), [p.name for p in fold.glob("training_log_*.txt")]
    finished = [[int(e) for e in re.findall(r"INFO epoch (\d+): ", log)] for log in logs]
    assert sum(finished, []) == list(range(epochs)), finished
    done = 0
    for log, epochs_of_attempt in zip(logs, finished, strict=True):
        if done:
            assert f"after epoch {done}" in log, log[:500]
        done += len(epochs_of_attempt)
    final = torch.load(fold / "checkpoint_final.pt", weights_only=True)
    assert final["current_epoch"] == epochs and len(final["logging"]["train_loss"]) == epochs


def test_dry_run_of_a_thousand_cases_on_slurm_submits_batches_not_cases(slurm, tmp_path):
    dataset = tmp_path / "Dataset999_Many"
    write_tiny_dataset(dataset, 1000)
    dry = run_on_slurm(tmp_path, "-n", config={"dataset": str(dataset)})
    jobs = scheduled_jobs(dry.stdout)
    per_case_stages = ("verify", "crop")
    for stage in per_case_stages:
        batches = sorted(rule for rule in jobs if rule.startswith(f"{stage}_b"))
        assert batches == [f"{stage}_b{i:03d}" for i in range(8)], jobs
    # Until the plan exists, the rest of the DAG is the plan's checkpoint: 8 + 8 per-case jobs, not 2 000.
    assert sum(jobs.values()) < 30, jobs
