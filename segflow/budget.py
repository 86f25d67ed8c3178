"""A run's budget before it is spent: every candidate's jobs and what each declares, and how long a fold's
training will take on the device that trains it.

The estimate times the planned network's steps on synthetic batches of its planned patch and batch size
(``probe``): training steps (forward, loss, backward, optimiser) and validation steps (forward, loss, hard
counts), each the median (mean) of ``PROBE_STEPS`` after an untimed one (allocations, cuDNN's choice of algorithms),
with the threads and on the device of a training job; then epochs x (iterations x training step + validation
iterations x validation step). Where a training job has loader workers, the estimate leaves the loader out
(they cut and augment the next batch while a step runs: hidden unless they fall behind, or, on a CPU, compete with
the step for cores); where it has none (one thread on a CPU), the training process augments each batch between
its steps, and the probe times that too (``augmentation_seconds``). Left out: checkpoints and progress.png (about
a second per epoch), and the fold's final validation (a job of its own). The report sets the estimate beside the
epoch times the folds measured (``measured_epoch_seconds``).

Nothing is timed where the run trains no fold (``folds: []``: a run that prepares the data), nor where a fold has
fewer than ``PROBE_MIN_FOLD_STEPS`` steps (training and validation iterations over all epochs: a run that only
tries the chain): such a fold takes about as long as its probe, which would hold the run up for nothing.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path

from segflow.io import load_json, save_json
from segflow.progress import Heartbeat, duration

log = logging.getLogger("segflow.progress")

PROBE_STEPS = 2
#: On a CPU, where a step at the planned batch size would take longer than this (MSD Prostate 2d: 31 slices of
#: 320 x 320, minutes per step), smaller batches are timed (``cpu_timings``), so that the probe takes seconds,
#: not a quarter of an hour.
FULL_BATCH_PROBE_S = 10.0
#: The probe times about ten steps per candidate (untimed and timed, training and validation, per batch size).
PROBE_MIN_FOLD_STEPS = 20


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(step, steps: int, device) -> float:
    """The median wall time of ``steps`` calls of ``step`` (the device's queue drained around each)."""
    times = []
    for _ in range(steps):
        synchronize(device)
        started = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def synthetic_batch(trainer, labels: dict, batch_size: int, generator):
    """(data, deep-supervision targets) of ``batch_size`` random samples, on the trainer's device, shaped like
    its batches: normal intensities, labels drawn from the dataset's label values (``labels``: dataset.json's)."""
    from segflow.train.loss import target_pyramid

    data, seg = synthetic_patches(labels, (batch_size, trainer.in_channels, *trainer.patch_size), generator)
    data, seg = data.to(trainer.device), seg.to(trainer.device)
    return data.contiguous(memory_format=trainer.memory_format), target_pyramid(
        trainer.labels.target(seg), trainer.ds_scales
    )


def synthetic_patches(labels: dict, shape, generator):
    """Image patches of ``shape`` (N x C x ...) with normal intensities, and N x 1 x ... int16 label maps whose
    values are drawn from the dataset's (``labels``: dataset.json's)."""
    import torch

    from segflow.labels import label_values

    values = torch.tensor(label_values(labels), dtype=torch.int16)
    seg = values[torch.randint(len(values), (shape[0], 1, *shape[2:]), generator=generator)]
    return torch.randn(shape, generator=generator), seg


def probe(plans: dict, dataset_json: dict, configuration: str, settings, device: str = "auto") -> dict:
    """Seconds per training and per validation step of ``configuration``'s network at its planned batch size, on
    ``device`` with torch's current threads; ``timed_batches`` says at which batch sizes they were timed (the
    planned one, or the two largest of the smaller ones a CPU timed, see ``cpu_timings``)."""
    import torch

    from segflow.train.loop import Trainer, workers_for

    trainer = Trainer.without_cases(plans, dataset_json, configuration, settings, device)
    batch = trainer.configuration.batch_size
    generator = torch.Generator().manual_seed(0)
    labels = dataset_json["labels"]
    if trainer.device.type == "cpu":
        training_seconds(trainer, labels, 1, generator, steps=1)
        training = cpu_timings(trainer, labels, batch, generator)
    else:
        training_seconds(trainer, labels, batch, generator, steps=1)
        training = {batch: training_seconds(trainer, labels, batch, generator)}
    sizes = [batch] if batch in training else sorted(training)[-2:]
    validation = {size: validation_seconds(trainer, labels, size, generator) for size in sizes}
    in_process = workers_for(torch.get_num_threads(), trainer.device) == 0
    return {
        "device": device_name(trainer.device),
        "threads": torch.get_num_threads(),
        "batch_size": batch,
        "timed_batches": sizes,
        "train_step_s": at_batch({size: training[size] for size in sizes}, batch),
        "validation_step_s": at_batch(validation, batch),
        # without loader workers the training process augments each batch between its steps
        "augmentation_s": augmentation_seconds(trainer, labels, sizes[-1]) * batch / sizes[-1] if in_process else 0.0,
    }


def augmentation_seconds(trainer, labels: dict, batch: int) -> float:
    """Median seconds to augment a synthetic batch of ``batch`` samples as the training process would, with
    parameters drawn as for training (seeded: the same draws every time)."""
    import numpy as np
    import torch

    np.random.seed(0)
    params = trainer.augmentation.batched.draw(batch, trainer.in_channels)
    moved = int(np.count_nonzero(params["spatial"]))
    generator = torch.Generator().manual_seed(0)
    data, seg = synthetic_patches(labels, (batch, trainer.in_channels, *trainer.patch_size), generator)
    enlarged = (moved, trainer.in_channels, *trainer.augmentation.settings.enlarged_patch)
    moved_data, moved_seg = synthetic_patches(labels, enlarged, generator)
    cut = {"data": data, "seg": seg, "moved_data": moved_data, "moved_seg": moved_seg, "augmentation": params}
    return median_seconds(lambda: trainer.augmentation.augmented(cut), PROBE_STEPS, trainer.device)


def training_seconds(trainer, labels: dict, batch: int, generator, steps: int = PROBE_STEPS) -> float:
    """Median seconds of a training step (forward, loss, backward, optimiser) on a synthetic batch."""
    data, targets = synthetic_batch(trainer, labels, batch, generator)
    trainer.network.train()
    return median_seconds(lambda: trainer.train_step(data, targets), steps, trainer.device)


def validation_seconds(trainer, labels: dict, batch: int, generator, steps: int = PROBE_STEPS) -> float:
    """Median seconds of a validation step (forward, loss, hard counts) on a synthetic batch."""
    data, targets = synthetic_batch(trainer, labels, batch, generator)
    trainer.network.eval()
    return median_seconds(lambda: trainer.validation_step(data, targets), steps, trainer.device)


def cpu_timings(trainer, labels: dict, batch: int, generator) -> dict[int, float]:
    """Training step seconds at batch sizes 1, 4, 16, ... up to the planned one, or up to the last whose next
    would take longer than ``FULL_BATCH_PROBE_S`` (at least two sizes: 1 and the largest that fits where 4 would
    already take longer): on a CPU a step's time grows along a straight line with the batch (a fixed cost and a cost per
    sample), which ``at_batch`` follows beyond the last two."""
    timed, size = {}, 1
    while True:
        timed[size] = training_seconds(trainer, labels, size, generator)
        if size == batch:
            return timed
        following = min(batch, size * 4)
        if timed[size] * following / size > FULL_BATCH_PROBE_S:
            if len(timed) > 1:
                return timed
            # a line needs two sizes (one sample's step alone would count its fixed cost per sample): the largest
            # that fits, as the further the two lie apart, the less their noise weighs at the planned batch
            following = min(batch, max(2, int(FULL_BATCH_PROBE_S / timed[size])))
        size = following


def at_batch(seconds: dict[int, float], batch: int) -> float:
    """A step's seconds at ``batch`` from those timed at sizes up to it: the time at ``batch`` itself, or the
    straight line through the two largest, or in proportion to a single one."""
    if batch in seconds:
        return seconds[batch]
    if len(seconds) == 1:
        ((timed, value),) = seconds.items()
        return value * batch / timed
    (b0, t0), (b1, t1) = sorted(seconds.items())[-2:]
    return t0 + (t1 - t0) * (batch - b0) / (b1 - b0)


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def epoch_seconds(probed: dict, train: dict) -> float:
    """A training epoch's estimated wall time: its training and validation iterations (``train``: the config's
    train settings)."""
    training = train["iterations_per_epoch"] * (probed["train_step_s"] + probed.get("augmentation_s", 0.0))
    return training + train["val_iterations"] * probed["validation_step_s"]


def candidate_budget(job: dict, probed: dict, train: dict) -> dict:
    """One candidate's entry: its jobs and what they declare (``job``, from the workflow), its probe and the
    estimated time per epoch and per fold."""
    if "error" in probed or "not_timed" in probed:
        return {**job, **probed, "epoch_s": None, "fold_s": None}
    per_epoch = epoch_seconds(probed, train)
    return {**job, **probed, "epoch_s": per_epoch, "fold_s": per_epoch * train["epochs"]}


def make_budget(dataset: str, candidates: list[dict], train: dict, folds: list, jobs: dict) -> dict:
    """The whole budget: candidates (``candidate_budget``), the config's training budget and the job counts."""
    return {
        "dataset": dataset,
        "epochs": train["epochs"],
        "iterations_per_epoch": train["iterations_per_epoch"],
        "val_iterations": train["val_iterations"],
        "folds": [str(f) for f in folds],
        "runtime_minutes": train["runtime_minutes"],
        "jobs": jobs,
        "candidates": candidates,
        "training_s": sum(c["fold_s"] for c in candidates if c["fold_s"] is not None) * len(folds),
    }


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def gigabytes(mb: int) -> str:
    return f"{mb / 1024:.1f} GB"


def summary_lines(budget: dict) -> list[str]:
    """The budget as a person reads it on the terminal."""
    folds, jobs = budget["folds"], budget["jobs"]
    named = f" ({', '.join(folds)})" if folds else ""
    lines = [
        f"budget of {budget['dataset']}: {counted(len(budget['candidates']), 'candidate')} x "
        f"{counted(len(folds), 'fold')}{named}, each {budget['epochs']} epochs x {budget['iterations_per_epoch']} "
        f"iterations (+ {budget['val_iterations']} validation iterations)"
    ]
    for c in budget["candidates"]:
        gpu = f", {c['gpus']} GPU" if c["gpus"] else ""
        declared = (
            f"  {c['name']}: patch {'x'.join(map(str, c['patch_size']))}, batch {c['batch_size']}; "
            f"training job {gigabytes(c['train_mem_mb'])}{gpu}, validation job {gigabytes(c['validation_mem_mb'])}; "
        )
        if c["fold_s"] is None:
            reason = c.get("not_timed") or f"its training step could not be timed: {c['error']}"
            lines.append(f"{declared}{reason}")
            continue
        timed = c["timed_batches"]
        timed = "" if timed == [c["batch_size"]] else f" (timed at batches {' and '.join(map(str, timed))})"
        augmenting = f" + {c['augmentation_s']:.2f} s augmenting" if c.get("augmentation_s") else ""
        lines.append(
            f"{declared}on {c['device']} ({counted(c['threads'], 'thread')}): {c['train_step_s']:.2f} s per "
            f"iteration{timed}{augmenting}, {duration(c['epoch_s'])} per epoch, about {duration(c['fold_s'])} per fold"
        )
    predict = f" ({gigabytes(jobs['predict_mem_mb'])} each)" if jobs["predict"] else ""
    total = (
        f"; training in all about {duration(budget['training_s'])} one job at a time" if budget["training_s"] else ""
    )
    lines.append(
        f"  jobs: {jobs['train']} training, {jobs['validate']} validation, {jobs['predict']} prediction{predict}{total}"
    )
    limit = budget["runtime_minutes"] * 60
    over = [c["name"] for c in budget["candidates"] if (c["fold_s"] or 0) > limit]
    if over:
        lines.append(
            f"  warning: a fold of {', '.join(over)} is estimated to take longer than the training jobs' runtime "
            f"limit ({budget['runtime_minutes']} min; a cluster kills a job at it): raise train.runtime_minutes, "
            "or train fewer epochs"
        )
    return lines


def show(budget: dict) -> None:
    for line in summary_lines(budget):
        log.info("%s", line)


def probe_or_error(job: dict, dataset_json: dict, settings, device: str) -> dict:
    """``probe`` of a workflow entry (its ``plans`` file and ``configuration``), or the error it met: the budget
    reports what training will meet, it stops nothing."""
    try:
        return probe(load_json(job["plans"]), dataset_json, job["configuration"], settings, device)
    except Exception as err:  # noqa: BLE001
        logging.getLogger("segflow.budget").exception("%s's training step could not be timed", job["name"])
        return {"error": f"{type(err).__name__}: {err}"}


def estimate_budget(
    dataset: str,
    dataset_json_path,
    candidates: list[dict],
    train: dict,
    folds: list,
    jobs: dict,
    out_path,
    device: str = "auto",
    threads: int = 1,
) -> dict:
    """Probe every candidate (``candidates``: the workflow's entries, each with its ``plans`` file and
    ``configuration``) unless a fold is too short to time, write the budget to ``out_path`` (JSON) and show it."""
    reason = untimed_reason(train, folds)
    if reason:
        entries = [candidate_budget(job, {"not_timed": reason}, train) for job in candidates]
    else:
        entries = probed_candidates(dataset_json_path, candidates, train, device, threads)
    budget = make_budget(dataset, entries, train, folds, jobs)
    save_json(budget, out_path)
    show(budget)
    return budget


def fold_steps(train: dict) -> int:
    """The training and validation iterations of a fold, over all its epochs (``train``: the config's)."""
    return train["epochs"] * (train["iterations_per_epoch"] + train["val_iterations"])


def untimed_reason(train: dict, folds: list) -> str | None:
    """Why the run's training is not timed, or None where it is."""
    if not folds:
        return "not timed: the run trains no fold"
    steps = fold_steps(train)
    if steps < PROBE_MIN_FOLD_STEPS:
        return f"not timed: a fold of {counted(steps, 'step')} takes about as long as timing it"
    return None


def probed_candidates(dataset_json_path, candidates: list[dict], train: dict, device: str, threads: int) -> list:
    import torch

    from segflow.train.settings import settings_from_config

    torch.set_num_threads(max(1, threads))
    dataset_json = load_json(dataset_json_path)
    settings = settings_from_config(train)
    entries = []
    with Heartbeat("budget") as heartbeat:  # a large network's steps on a CPU take minutes
        for job in candidates:
            log.info("budget: timing %s's training steps", job["name"])
            heartbeat.beat(f"timing {job['name']}'s training steps")
            entries.append(candidate_budget(job, probe_or_error(job, dataset_json, settings, device), train))
    return entries


def measured_epoch_seconds(fold_dirs) -> float | None:
    """The median epoch wall time over the folds' training logs (training_log.jsonl) that exist; None if none."""
    seconds = []
    for folder in fold_dirs:
        path = Path(folder) / "training_log.jsonl"
        if path.is_file():
            seconds += [json.loads(line)["epoch_seconds"] for line in path.read_text().splitlines() if line]
    return statistics.median(seconds) if seconds else None
