"""Training as a process: bit-identical weights for identical configs, and a SIGKILLed run that resumes ends
exactly where an uninterrupted one does, without repeating a finished epoch."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from segflow.io import save_json, save_npy
from segflow.plan import plan_experiment
from segflow.preprocess import class_locations
from segflow.splits import kfold_splits

LABELS = {"background": 0, "a": 1, "b": 2}
EPOCHS = 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    folder = root / "preprocessed" / "3d_fullres"
    cases = [f"c{i}" for i in range(6)]
    rng = np.random.default_rng(0)
    for case in cases:
        seg = np.zeros((1, 16, 32, 32), np.int8)
        z, y, x = rng.integers(2, 10), rng.integers(4, 20), rng.integers(4, 20)
        seg[0, z : z + 5, y : y + 9, x : x + 9] = 1
        seg[0, z + 1 : z + 3, y + 2 : y + 5, x + 2 : x + 5] = 2
        data = (seg * 2.0 + rng.normal(0, 0.5, seg.shape)).astype(np.float32)
        save_npy(data, folder / f"{case}.npy")
        save_npy(seg, folder / f"{case}_seg.npy")
        save_json({"class_locations": class_locations(seg, [1, 2])}, folder / f"{case}.json")
    fingerprint = {
        "spacings": [[1.0, 1.0, 1.0]] * 6,
        "shapes_after_crop": [[16, 32, 32]] * 6,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": {}},
    }
    dataset_json = {"channel_names": {"0": "MR"}, "labels": LABELS, "numTraining": 6, "file_ending": ".nii.gz"}
    save_json(plan_experiment(fingerprint, dataset_json), root / "plans.json")
    save_json(dataset_json, root / "dataset.json")
    save_json(kfold_splits(cases), root / "splits.json")
    return root


def start_training(root, out):
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "from segflow.train.loop import TrainSettings, train\n"
        f"r = {str(root)!r}\n"
        "train(f'{r}/plans.json', f'{r}/dataset.json', f'{r}/splits.json', f'{r}/preprocessed', '3d_fullres', 0,\n"
        f"      {str(out)!r}, TrainSettings(epochs={EPOCHS}, iterations_per_epoch=3, val_iterations=2, seed=7),\n"
        "      device='cpu', threads=2)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def weights(out):
    return torch.load(out / "checkpoint_final.pt", weights_only=True)["network_weights"]


def logged_epochs(out):
    return [json.loads(line)["epoch"] for line in (out / "training_log.jsonl").read_text().splitlines()]


def test_same_config_gives_bit_identical_weights_and_resume_continues_exactly(dataset, tmp_path):
    first, second, resumed = tmp_path / "first", tmp_path / "second", tmp_path / "resumed"
    finish(start_training(dataset, first))
    finish(start_training(dataset, second))
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert logged_epochs(first) == list(range(EPOCHS))
    assert (first / "progress.png").is_file() and (first / "checkpoint_best.pt").is_file()
    # The resumable state is kept: killed after training but before Snakemake registered the job's success, a
    # job loses checkpoint_final.pt (a declared output); the next attempt writes it again without training.
    assert torch.load(first / "checkpoint_latest.pt", weights_only=True)["current_epoch"] == EPOCHS
    (first / "checkpoint_final.pt").unlink()
    (first / "progress.png").unlink()
    output = finish(start_training(dataset, first))
    assert f"after epoch {EPOCHS}" in output and "epoch 0:" not in output
    assert all(torch.equal(a[k], weights(first)[k]) for k in a) and (first / "progress.png").is_file()
    # A damaged resumable state (cut short): training falls back to the checkpoint before it, trains the one
    # epoch again and ends with the same weights.
    latest = first / "checkpoint_latest.pt"
    latest.write_bytes(latest.read_bytes()[:5000])
    (first / "checkpoint_final.pt").unlink()
    output = finish(start_training(dataset, first))
    assert f"not resuming from {latest}" in output and "cannot be read as a checkpoint" in output, output
    assert f"resuming {first / 'checkpoint_previous.pt'} after epoch {EPOCHS - 1}" in output
    assert f"epoch {EPOCHS - 1}:" in output and f"epoch {EPOCHS - 2}:" not in output
    assert all(torch.equal(a[k], weights(first)[k]) for k in a)

    process = start_training(dataset, resumed)
    deadline = time.time() + 300
    while time.time() < deadline:
        log = resumed / "training_log.jsonl"
        if log.is_file() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = torch.load(resumed / "checkpoint_latest.pt", weights_only=True)["current_epoch"]
    assert 2 <= killed_at < EPOCHS
    assert not (resumed / "checkpoint_final.pt").exists()
    output = finish(start_training(dataset, resumed))
    assert f"resuming {resumed / 'checkpoint_latest.pt'} after epoch {killed_at}" in output
    assert f"epoch {killed_at - 1}:" not in output  # no finished epoch is trained again
    assert logged_epochs(resumed) == list(range(EPOCHS))
    c = weights(resumed)
    assert all(torch.equal(a[k], c[k]) for k in a)
