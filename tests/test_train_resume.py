"""Training as a process: bit-identical weights for identical configs, a finished training's resumable state,
and a SIGKILLed run whose latest checkpoint is damaged, which resumes one epoch back and ends exactly where an
uninterrupted one does. (A run killed mid-epoch and resumed from its latest checkpoint through Snakemake is
tests/test_faults.py's.)"""

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


def start_training(root, out, prelude: str = "", python: str = sys.executable):
    """A training of the module's dataset in a process of its own (``python``'s); ``prelude``: code run before
    it (a fault)."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "from segflow.train.loop import train\nfrom segflow.train.settings import TrainSettings\n"
        f"{prelude}\n"
        f"r = {str(root)!r}\n"
        "train(f'{r}/plans.json', f'{r}/dataset.json', f'{r}/splits.json', f'{r}/preprocessed', '3d_fullres', 0,\n"
        f"      {str(out)!r}, TrainSettings(epochs={EPOCHS}, iterations_per_epoch=3, val_iterations=2, seed=7),\n"
        "      device='cpu', threads=2)\n"
    )
    return subprocess.Popen(
        [python, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def outlived(session: int, seconds: float = 60) -> bool:
    """Whether a process of the session ``session`` (a training's, started by ``start_training``) is still alive
    ``seconds`` after its leader ended."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.killpg(session, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.5)
    os.killpg(session, signal.SIGKILL)
    return True


def kill_after_two_epochs(process, out) -> None:
    """SIGKILL a training (its whole process group) once it has logged two finished epochs."""
    deadline = time.time() + 300
    while time.time() < deadline:
        log = out / "training_log.jsonl"
        if log.is_file() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def finish(process) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def weights(out):
    return torch.load(out / "checkpoint_final.pt", weights_only=True)["network_weights"]


def logged_epochs(out):
    return [json.loads(line)["epoch"] for line in (out / "training_log.jsonl").read_text().splitlines()]


def assert_best_is_the_epoch_of_the_highest_ema(out) -> None:
    """checkpoint_best.pt holds the state after the first epoch of the highest EMA pseudo Dice: the very file
    that epoch wrote as its latest state (a second name, no copy), so also checkpoint_final.pt where that
    epoch was the last."""
    ema = [json.loads(line)["ema_fg_dice"] for line in (out / "training_log.jsonl").read_text().splitlines()]
    best_epoch = ema.index(max(ema)) + 1
    best = torch.load(out / "checkpoint_best.pt", weights_only=True)
    assert best["current_epoch"] == best_epoch and best["best_ema"] == max(ema)
    assert (out / "checkpoint_best.pt").samefile(out / "checkpoint_final.pt") == (best_epoch == EPOCHS)
    assert (out / "checkpoint_best.pt").stat().st_nlink == (3 if best_epoch == EPOCHS else 1)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """One uninterrupted training of the module's dataset."""
    out = tmp_path_factory.mktemp("trained") / "fold"
    finish(start_training(dataset, out))
    return out


@pytest.mark.slow
def test_same_config_gives_identical_weights_and_a_finished_training_rewrites_its_outputs(dataset, trained, tmp_path):
    first, second = trained, tmp_path / "second"
    finish(start_training(dataset, second))
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert logged_epochs(first) == list(range(EPOCHS))
    assert (first / "progress.png").is_file() and (first / "checkpoint_best.pt").is_file()
    # The resumable state is kept, as a second name of checkpoint_final.pt (no extra disk): killed after
    # training but before Snakemake registered the job's success, a job loses checkpoint_final.pt (a declared
    # output); the next attempt writes it again without training. The fallback one epoch back is gone.
    assert (first / "checkpoint_latest.pt").samefile(first / "checkpoint_final.pt")
    assert not (first / "checkpoint_previous.pt").exists()
    assert_best_is_the_epoch_of_the_highest_ema(first)
    (first / "checkpoint_final.pt").unlink()
    (first / "progress.png").unlink()
    output = finish(start_training(dataset, first))
    assert f"after epoch {EPOCHS}" in output and "epoch 0:" not in output
    assert all(torch.equal(a[k], weights(first)[k]) for k in a) and (first / "progress.png").is_file()
    assert (first / "checkpoint_latest.pt").samefile(first / "checkpoint_final.pt")


@pytest.mark.slow
def test_a_damaged_resumable_state_falls_back_one_epoch(dataset, trained, tmp_path):
    """Killed in the middle of a training, with checkpoint_latest.pt found damaged (cut short): training resumes
    from checkpoint_previous.pt, one epoch earlier, trains that epoch again and ends with the same weights."""
    reference, damaged = trained, tmp_path / "damaged"
    kill_after_two_epochs(start_training(dataset, damaged), damaged)
    latest = damaged / "checkpoint_latest.pt"
    killed_at = torch.load(latest, weights_only=True)["current_epoch"]
    assert killed_at < EPOCHS
    latest.write_bytes(latest.read_bytes()[:5000])
    output = finish(start_training(dataset, damaged))
    assert f"not resuming from {latest}" in output and "cannot be read as a checkpoint" in output, output
    assert f"resuming {damaged / 'checkpoint_previous.pt'} after epoch {killed_at - 1}" in output
    assert f"epoch {killed_at - 1}:" in output and f"epoch {killed_at - 2}:" not in output
    a, b = weights(reference), weights(damaged)
    assert all(torch.equal(a[k], b[k]) for k in a)


def in_process_trainer(dataset, output, settings, workers):
    """A CPU trainer of the test dataset's fold 0, run in this process."""
    from segflow.io import load_json
    from segflow.train.loop import Trainer

    def read(name):
        return load_json(dataset / name)

    return Trainer(
        read("plans.json"),
        read("dataset.json"),
        "3d_fullres",
        dataset / "preprocessed",
        read("splits.json"),
        0,
        output,
        settings,
        "cpu",
        workers,
    )


@pytest.mark.slow
def test_any_number_of_loader_workers_draws_the_same_batches_from_pools_that_live_for_the_whole_training(
    dataset, tmp_path, monkeypatch
):
    """A CPU training with no loader worker cuts and augments its batches in its own process; with three loader
    workers doing that instead, the weights are the same: a batch depends on the seeds alone. The workers are
    started once for the whole training, three for training batches and one for validation batches, not once
    per epoch."""
    from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter

    from segflow.train.settings import TrainSettings

    pools = []
    start = MultiThreadedAugmenter._start
    monkeypatch.setattr(MultiThreadedAugmenter, "_start", lambda self: pools.append(self.num_processes) or start(self))
    settings = TrainSettings(epochs=3, iterations_per_epoch=2, val_iterations=2, seed=7)
    trained = []
    for workers in (0, 3):
        in_process_trainer(dataset, tmp_path / f"workers_{workers}", settings, workers).fit()
        trained.append(weights(tmp_path / f"workers_{workers}"))
    a, b = trained
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(pools) == [1, 3]


def test_on_a_cpu_the_loader_hands_over_batches_it_has_augmented(dataset, tmp_path, monkeypatch):
    """On a CPU the batched augmentation runs where the batch is cut (a loader worker, or with none the
    training process between steps), so the training step receives augmented patches at the final size."""
    from segflow.train.device_augment import BatchedAugmentation
    from segflow.train.settings import TrainSettings

    augmented = []
    apply = BatchedAugmentation.apply

    def recorded(self, batch):
        augmented.append(apply(self, batch))
        return augmented[-1]

    monkeypatch.setattr(BatchedAugmentation, "apply", recorded)
    trainer = in_process_trainer(dataset, tmp_path, TrainSettings(seed=3), workers=0)
    batches, _ = trainer.batches(validation=False, first_batch=0)
    for _ in range(2):
        batch = next(batches)
        assert set(batch) == {"data", "seg"}
        assert list(batch["data"].shape[2:]) == list(trainer.patch_size)
        assert batch["data"] is augmented[-1][0] and batch["seg"] is augmented[-1][1]
    assert len(augmented) == 2


#: Run in a training process: SIGKILL it when the second best state (an epoch after the first, which is always
#: the best so far) has been linked as checkpoint_best.pt, before it is renamed to checkpoint_latest.pt.
KILL_AFTER_THE_SECOND_BEST_LINK = """
import os, signal
import segflow.train.checkpoints as checkpoints

def link_then_die(source, destination, _link=checkpoints.link_file, _linked=[]):
    _link(source, destination)
    if destination.name == "checkpoint_best.pt":
        _linked.append(source)
        if len(_linked) == 2:
            os.kill(os.getpid(), signal.SIGKILL)

checkpoints.link_file = link_then_die
"""

#: Run in the next attempt: its first epoch ends with a lower pseudo Dice than the interrupted attempt's (as a
#: GPU's non-deterministic kernels may give), so that its state is written as the latest only, not as the best.
WORSE_FIRST_EPOCH = """
import segflow.train.loop as loop
_run_epoch = loop.Trainer.run_epoch

def worse_once(self, epoch, *batches, _done=[]):
    _run_epoch(self, epoch, *batches)
    if not _done:
        _done.append(epoch)
        self.history["mean_fg_dice"][-1] = 0.0
        self.history["ema_fg_dice"][-1] = -1.0

loop.Trainer.run_epoch = worse_once
"""


@pytest.mark.slow
def test_a_kill_between_linking_the_best_state_and_renaming_it_leaves_the_best_checkpoint_intact(dataset, tmp_path):
    """Killed after an epoch's state got its second name checkpoint_best.pt and before it became
    checkpoint_latest.pt, a training leaves that state's temporary file behind, sharing the best file's
    content; the next attempt writes its own state as a new file, so the best checkpoint keeps the best epoch's
    weights whatever the next attempt's epochs give. Its loader worker dies with it, not left polling."""
    out = tmp_path / "fold"
    process = start_training(dataset, out, prelude=KILL_AFTER_THE_SECOND_BEST_LINK)
    assert process.wait(timeout=600) == -signal.SIGKILL
    assert not outlived(process.pid), "a loader worker outlived the training process killed with SIGKILL"
    best = out / "checkpoint_best.pt"
    leftover = next(out.glob(".checkpoint_latest.pt.part*"))
    assert leftover.samefile(best)  # the window the kill hit
    best_bytes = best.read_bytes()
    best_epoch = torch.load(best, weights_only=True)["current_epoch"]
    assert torch.load(out / "checkpoint_latest.pt", weights_only=True)["current_epoch"] == best_epoch - 1
    output = finish(start_training(dataset, out, prelude=WORSE_FIRST_EPOCH))
    assert f"after epoch {best_epoch - 1}" in output
    assert best.read_bytes() == best_bytes
    assert torch.load(best, weights_only=True)["current_epoch"] == best_epoch


@pytest.mark.slow
def test_a_training_step_longer_than_the_heartbeat_interval_gets_lines_while_it_runs(dataset, tmp_path, monkeypatch):
    """One iteration of a large network on a CPU can take minutes (Prostate 2d: 5 min between lines before the
    heartbeat had a thread of its own). With the interval at 0.2 s and a second step that sleeps 2 s, lines come
    during that step and name it."""
    import logging

    from segflow import progress
    from segflow.train.loop import Trainer
    from segflow.train.settings import TrainSettings

    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.2)
    step, steps = Trainer.train_step, []

    def slow_second_step(self, data, targets):
        steps.append(None)
        if len(steps) == 2:
            time.sleep(2)
        return step(self, data, targets)

    monkeypatch.setattr(Trainer, "train_step", slow_second_step)
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    progress.log.addHandler(handler)
    level = progress.log.level
    progress.log.setLevel(logging.INFO)  # (not the attribute: setLevel clears the cache of isEnabledFor's answers)
    try:
        settings = TrainSettings(epochs=1, iterations_per_epoch=3, val_iterations=1, seed=1)
        in_process_trainer(dataset, tmp_path, settings, workers=0).fit()
    finally:
        progress.log.removeHandler(handler)
        progress.log.setLevel(level)
    during = [line for line in lines if "epoch 1/1: training iteration 2/3, " in line]
    assert len(during) >= 2, lines
