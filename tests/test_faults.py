"""Fault injection: SIGKILL of a preprocessing job, of a training job in the middle of an epoch, of the
snakemake process itself and of a prediction job, each followed by a rerun that ends with results identical
to an undisturbed run (CPU, fixed seeds).

Each test works in a copy of an undisturbed run (the demo, or the Hippocampus preprocessing), removes the
outputs of the job it will disturb, starts snakemake for them, kills at a known point, reruns, and then
compares every result file with the undisturbed run's: byte for byte, except what records time (logs,
benchmarks, epoch durations, progress.png), and checkpoints, whose weights, optimiser state and logs must
be exactly equal.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from conftest import hippocampus_config, run_snakemake, snakemake_command

from segflow.batches import assign_batches

DEMO = Path("results") / "Task900_SegflowDemo"
TIMING_DIRECTORIES = {"logs", "benchmarks"}
TIMING_FILES = {"progress.png"}


# --- disturbing a run -----------------------------------------------------------------------------------


def copy_run(reference: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "disturbed"
    shutil.copytree(reference, workdir, symlinks=True)
    return workdir


def start_snakemake(workdir: Path, *targets, config: dict | None = None) -> subprocess.Popen:
    command = snakemake_command(workdir, *map(str, targets), config=config)
    log_path = workdir / "disturbed_run.log"
    log = open(log_path, "w")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    process.log_path = log_path
    return process


def wait_for(condition, what: str, snakemake: subprocess.Popen, step: float = 0.005, timeout: float = 300):
    """Poll ``condition`` until it holds; fails if snakemake ends first (a job was never started, say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if snakemake.poll() is not None:
            raise AssertionError(f"snakemake ended before {what}:\n{snakemake.log_path.read_text()[-3000:]}")
        time.sleep(step)
    raise AssertionError(f"gave up waiting for {what} after {timeout} s")


def job_process(snakemake: subprocess.Popen, script: str) -> psutil.Process | None:
    """The running job of snakemake whose script is ``workflow/scripts/<script>`` (local jobs run as
    ``python .snakemake/scripts/tmpXXXX.<script>``)."""
    try:
        for child in psutil.Process(snakemake.pid).children():
            if any(part.endswith(f".{script}") for part in child.cmdline()):
                return child
    except psutil.NoSuchProcess:
        pass
    return None


def kill_job(job: psutil.Process) -> None:
    """SIGKILL a job and the processes it started (augmentation workers), the job first."""
    workers = job.children(recursive=True)
    for process in [job, *workers]:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs([job, *workers], timeout=30)


def failed_run_output(snakemake: subprocess.Popen) -> str:
    assert snakemake.wait(timeout=300) != 0, "snakemake did not notice its job was killed"
    return snakemake.log_path.read_text()


# --- comparing with the undisturbed run -----------------------------------------------------------------


def result_files(workdir: Path) -> set[Path]:
    root = workdir / "results"
    files = set()
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        timing = TIMING_DIRECTORIES & set(relative.parts[:-1]) or path.name in TIMING_FILES
        if path.is_file() and not timing and not path.name.startswith("training_log_"):
            files.add(relative)
    return files


def without_timing(value):
    """A checkpoint's or training log's content less the epoch durations (wall-clock time)."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k != "epoch_seconds"}
    if isinstance(value, list | tuple):
        return [without_timing(v) for v in value]
    return value


def assert_equal_values(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_equal_values(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal_values(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_results(workdir: Path, reference: Path) -> None:
    """Every result file of ``workdir`` equals the undisturbed run's, and no file is missing or extra."""
    ours, theirs = result_files(workdir), result_files(reference)
    assert ours == theirs, f"missing: {sorted(theirs - ours)[:5]}, extra: {sorted(ours - theirs)[:5]}"
    for relative in sorted(ours):
        a, b = workdir / "results" / relative, reference / "results" / relative
        if a.read_bytes() == b.read_bytes():
            continue
        if a.suffix == ".pt":
            checkpoints = [without_timing(torch.load(p, weights_only=True)) for p in (a, b)]
            assert_equal_values(*checkpoints, str(relative))
        elif a.name == "training_log.jsonl":
            logs = [[without_timing(json.loads(line)) for line in p.read_text().splitlines()] for p in (a, b)]
            assert_equal_values(*logs, str(relative))
        else:
            raise AssertionError(f"{relative} differs from the undisturbed run's")


# --- the four faults ------------------------------------------------------------------------------------


def test_preprocessing_job_killed_with_half_its_cases_written(hippocampus, hippocampus_run, tmp_path):
    reference = hippocampus_run.parents[1]
    workdir = copy_run(reference, tmp_path)
    out = workdir / hippocampus_run.relative_to(reference)
    cases = sorted(p.stem for p in (out / "preprocessed" / "3d_fullres").glob("*.json"))
    batch, batch_cases = max(assign_batches(cases, 8).items(), key=lambda item: len(item[1]))
    manifest = out / "batches" / "preprocessed" / "3d_fullres" / f"{batch}.json"
    outputs = [
        out / "preprocessed" / "3d_fullres" / f"{c}{ending}"
        for c in batch_cases
        for ending in (".npy", "_seg.npy", ".json")
    ]
    for path in [manifest, *outputs]:
        path.unlink()
    config = hippocampus_config(hippocampus)
    target = manifest.relative_to(workdir)  # the batch job's one declared output; with --directory, relative
    snakemake = start_snakemake(workdir, target, config=config)
    job = wait_for(lambda: job_process(snakemake, "preprocess.py"), "the preprocessing job", snakemake)
    wait_for(lambda: any(p.exists() for p in outputs), "its first preprocessed case", snakemake)
    kill_job(job)
    written = [p for p in outputs if p.exists()]
    assert 0 < len(written) < len(outputs), f"{len(written)} of {len(outputs)} files written when killed"
    log = failed_run_output(snakemake)
    assert f"Error in rule preprocess_{batch}" in log, log[-3000:]
    assert not manifest.exists(), "a killed batch must not look done"
    for path in written:  # each file written whole or not at all (atomic writes), so readers never see half
        assert path.stat().st_size > 0
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            np.load(path, allow_pickle=False)
    run_snakemake(workdir, str(target), config=config)
    assert_same_results(workdir, reference)


def test_a_per_case_file_deleted_after_its_batch_is_named_with_the_fix(demo_run, tmp_path):
    """Snakemake tracks a batch job by its manifest: a case's file deleted afterwards stops its readers with
    one line naming the file and the manifest to delete, and deleting it redoes the batch."""
    workdir = copy_run(demo_run, tmp_path)
    gone = workdir / DEMO / "preprocessed" / "2d" / "demo_000.npy"
    gone.unlink()
    target = DEMO / "train" / "2d" / "fold_0" / "checkpoint_final.pt"
    result = run_snakemake(workdir, str(target), "--forcerun", "train", check=False)
    assert result.returncode != 0
    message = next(line for line in result.stdout.splitlines() if line.startswith("segflow: bad input:"))
    relative = str(gone.relative_to(workdir))  # the jobs' paths are relative to snakemake's --directory
    listing = [
        m.relative_to(workdir)
        for m in (workdir / DEMO / "batches" / "preprocessed" / "2d").glob("*.json")
        if relative in m.read_text()
    ]
    assert len(listing) == 1 and relative in message and f"Fix: delete {listing[0]} " in message, message
    assert "Traceback" not in result.stdout
    (workdir / listing[0]).unlink()
    run_snakemake(workdir, str(listing[0]))
    assert (
        np.load(gone, allow_pickle=False).shape
        == np.load(demo_run / DEMO / "preprocessed" / "2d" / "demo_000.npy", allow_pickle=False).shape
    )


def retrain_until_epoch_0_ends(workdir: Path, fold: Path):
    """Remove a demo fold (training and validation), ask snakemake for its validation again, and return
    (the validation target, snakemake, the training job) once the job has finished epoch 0."""
    shutil.rmtree(fold)
    target = fold.relative_to(workdir) / "validation"
    snakemake = start_snakemake(workdir, target)
    job = wait_for(lambda: job_process(snakemake, "train.py"), "the training job", snakemake)
    wait_for(lambda: (fold / "training_log.jsonl").exists(), "the end of epoch 0", snakemake, step=0.05)
    return target, snakemake, job


def test_training_job_killed_in_the_middle_of_an_epoch_resumes_exactly(demo_run, tmp_path):
    workdir = copy_run(demo_run, tmp_path)
    fold = workdir / DEMO / "train" / "2d" / "fold_1"
    target, snakemake, job = retrain_until_epoch_0_ends(workdir, fold)
    time.sleep(0.5)  # into epoch 1, which takes seconds here
    kill_job(job)
    assert "Error in rule train" in failed_run_output(snakemake)
    assert torch.load(fold / "checkpoint_latest.pt", weights_only=True)["current_epoch"] == 1  # killed in epoch 1
    assert not (fold / "checkpoint_final.pt").exists()
    rerun = run_snakemake(workdir, str(target))
    attempts = sorted(fold.glob("training_log_*.txt"))
    assert len(attempts) == 2 and "after epoch 1" in attempts[-1].read_text(), rerun.stdout[-3000:]
    assert "epoch 0:" not in attempts[-1].read_text()  # the finished epoch is not trained again
    assert_same_results(workdir, demo_run)


def test_snakemake_itself_killed_then_unlocked_and_rerun(demo_run, tmp_path):
    workdir = copy_run(demo_run, tmp_path)
    target, snakemake, job = retrain_until_epoch_0_ends(workdir, workdir / DEMO / "train" / "2d" / "fold_0")
    os.kill(snakemake.pid, signal.SIGKILL)
    snakemake.wait()
    # Its job lives on (as after `kill -9` of snakemake, or an OOM kill of it) and finishes on its own.
    assert job.is_running()
    psutil.wait_procs([job], timeout=300)
    locked = run_snakemake(workdir, str(target), check=False)
    assert locked.returncode != 0 and "--unlock" in locked.stdout
    run_snakemake(workdir, "--unlock")
    run_snakemake(workdir, str(target))
    assert_same_results(workdir, demo_run)


def test_prediction_job_killed_while_predicting(demo_run, tmp_path):
    workdir = copy_run(demo_run, tmp_path)
    prediction = workdir / DEMO / "predictions" / "demo_501.nii.gz"
    batch_log = next(p for p in (workdir / DEMO / "logs" / "predict").glob("*.log") if prediction.name in p.read_text())
    prediction.unlink()
    batch_log.unlink()
    snakemake = start_snakemake(workdir, prediction.relative_to(workdir))
    job = wait_for(lambda: job_process(snakemake, "predict.py"), "the prediction job", snakemake)
    wait_for(
        lambda: batch_log.exists() and "start predict_cases" in batch_log.read_text(),
        "the start of inference",
        snakemake,
    )
    time.sleep(0.5)  # the sliding window takes seconds here
    kill_job(job)
    assert f"Error in rule predict_{batch_log.stem}" in failed_run_output(snakemake)
    assert not prediction.exists()
    run_snakemake(workdir, str(prediction.relative_to(workdir)))
    assert_same_results(workdir, demo_run)


def kill_what_started_since(before: set[psutil.Process]) -> None:
    """SIGKILL the children this process started since ``before`` was taken, with everything they started."""
    for started in set(psutil.Process().children()) - before:
        with contextlib.suppress(psutil.NoSuchProcess):
            kill_job(started)


@pytest.fixture(autouse=True)
def no_job_left_behind():
    """A failed test must not leave a killed run's jobs training in the background. Only what the test started is
    killed: a run started before it (the SLURM demo run, in the same worker) goes on."""
    before = set(psutil.Process().children())
    yield
    kill_what_started_since(before)


def test_the_cleanup_kills_what_a_test_started_and_spares_what_ran_before():
    running_before = subprocess.Popen(["sleep", "600"])
    try:
        before = set(psutil.Process().children())
        started = psutil.Process(subprocess.Popen(["sh", "-c", "sleep 600 & wait"]).pid)
        deadline = time.monotonic() + 30
        while not started.children() and time.monotonic() < deadline:
            time.sleep(0.01)
        [grandchild] = started.children()
        kill_what_started_since(before)
        assert not started.is_running() and not grandchild.is_running()
        assert running_before.poll() is None, "the cleanup killed a process started before the test"
    finally:
        running_before.kill()
        running_before.wait()
