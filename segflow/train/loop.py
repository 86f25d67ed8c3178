"""Training of one (configuration, fold): nnU-Net's trainer as a resumable job (method reference §5.2, §5.7).

SGD (Nesterov, momentum 0.99, weight decay 3e-5), learning rate ``1e-2 * (1 - epoch / epochs) ** 0.9`` set at
the start of each epoch, gradient norm clipped at 12, mixed precision (fp16 autocast + GradScaler) on CUDA
and fp32 on CPU. Each epoch runs ``iterations_per_epoch`` training batches and ``val_iterations``
validation batches; the pseudo Dice of the validation batches (global TP/FP/FN of the full-resolution
output, background excluded) is smoothed by an exponential moving average (0.9), whose best value selects
``checkpoint_best.pt``. The fold folder's files: ``segflow.train.checkpoints``.

Checkpoints hold only tensors and plain Python values and load with ``torch.load(weights_only=True)``.
Batches: loader workers cut the patches (``segflow.resources.loader_workers``; with one thread on a CPU, the
training process itself); by default they also draw each sample's augmentation parameters, which are applied
to the whole batch: on CUDA by the training device, one batch ahead in a background thread (``Prefetcher``), on
a CPU by the worker that cut it (``augmentation.py``: the trainer does not know which). The loader's workers live
for the whole training, one pool for training batches and one for validation batches
(``segflow.resources.validation_workers``), as nnU-Net's do. Randomness comes from seeds derived from (seed, fold,
purpose, batch index), so two runs of the same config give the same weights on CPU, and an interrupted run
continued from ``checkpoint_latest.pt`` ends with the weights of an uninterrupted one; any number of workers, or
the training process itself, draw the same batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segflow.device import resolve_device
from segflow.io import atomic_path, load_json, save_json
from segflow.labels import label_values
from segflow.networks import build_network
from segflow.plans import PlanConfiguration
from segflow.progress import Countdown, Heartbeat
from segflow.resources import loader_workers, validation_workers
from segflow.splits import fold_cases
from segflow.train.augmentation import Augmentation
from segflow.train.cascade import foreground_labels, previous_stage_files
from segflow.train.checkpoints import FoldCheckpoints
from segflow.train.curves import PROGRESS_INTERVAL_S, write_progress
from segflow.train.data import Case, PatchLoader, Prefetcher
from segflow.train.loss import DeepSupervisionLoss, LabelSetup, deep_supervision_weights, target_pyramid
from segflow.train.optimizer import build_optimizer, learning_rate, training_recipe
from segflow.train.pretrained import load_pretrained
from segflow.train.settings import TrainSettings, derived_seed

log = logging.getLogger("segflow.train")


class Trainer:
    def __init__(
        self,
        plans: dict,
        dataset_json: dict,
        configuration: str,
        preprocessed: Path,
        splits,
        fold,
        out_dir: Path,
        settings: TrainSettings,
        device: str = "auto",
        workers: int = 0,
        previous_stage_dirs=(),
    ):
        self.configuration = PlanConfiguration.of(plans, configuration)
        self.settings = settings
        self.fold = str(fold)
        self.name = f"{configuration} fold {self.fold}"
        self.out = Path(out_dir)
        self.checkpoints = FoldCheckpoints(self.out)
        self.device = resolve_device(device)
        self.workers = workers
        self.labels = LabelSetup(dataset_json["labels"])
        train_ids, val_ids = fold_cases(splits, fold)
        self.train_ids = train_ids
        folder = Path(preprocessed) / self.configuration.data_folder
        previous = previous_stage_files(self.configuration.previous_stage, previous_stage_dirs, [*train_ids, *val_ids])
        self.previous_labels = foreground_labels(dataset_json["labels"]) if previous else None
        self.train_cases = [Case(folder, c, previous.get(c)) for c in train_ids]
        self.val_cases = [Case(folder, c, previous.get(c)) for c in val_ids]
        self.patch_size = self.configuration.patch_size
        self.is_2d = len(self.patch_size) == 2
        self.augmentation = Augmentation(
            self.patch_size,
            [c for c, m in enumerate(self.configuration.use_mask_for_norm) if m],
            label_values(dataset_json["labels"]),
            self.previous_labels,
            settings.augment_on,
            self.device,
        )
        self.in_channels = in_channels = len(dataset_json["channel_names"]) + len(self.previous_labels or [])
        torch.manual_seed(derived_seed(settings.seed, fold, "init"))
        self.network = build_network(self.configuration.settings, in_channels, self.labels.num_outputs)
        self.pretrained = (
            load_pretrained(self.network, settings.pretrained_weights) if settings.pretrained_weights else None
        )
        self.network = self.network.to(self.device)
        self.ds_scales = self.network.output_scales
        self.loss = DeepSupervisionLoss(
            self.labels.loss(self.configuration.batch_dice), deep_supervision_weights(len(self.ds_scales))
        )
        self.recipe = training_recipe(self.configuration.settings, settings)
        self.optimizer = build_optimizer(self.recipe, self.network.parameters())
        self.amp = self.device.type == "cuda"
        if self.amp:  # as nnunetv2: cuDNN picks the fastest convolution algorithms for the (fixed) patch size
            torch.backends.cudnn.benchmark = True
        channels_last = settings.channels_last
        if channels_last is None:
            channels_last = self.device.type == "cuda" and not self.is_2d
        self.memory_format = torch.channels_last_3d if channels_last and not self.is_2d else torch.contiguous_format
        self.network = self.network.to(memory_format=self.memory_format)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.history: dict[str, list] = {
            k: []
            for k in ("train_loss", "val_loss", "pseudo_dice", "mean_fg_dice", "ema_fg_dice", "lr", "epoch_seconds")
        }
        self.best_ema: float | None = None
        self.start_epoch = 0

    @classmethod
    def without_cases(cls, plans: dict, dataset_json: dict, configuration: str, settings: TrainSettings, device):
        """A trainer of no cases: a fold's network, loss and optimiser, for timing its steps on synthetic batches
        (``segflow.budget``). A cascade's gets no previous-stage channels, one or two input channels fewer."""
        empty = [{"train": [], "val": []}]
        return cls(plans, dataset_json, configuration, Path("."), empty, 0, Path("."), settings, device)

    # --- identity of a training run: a checkpoint of another run is never resumed -----------------------

    def signature(self) -> str:
        payload = {
            "configuration": self.configuration.settings,
            "fold": str(self.fold),
            "settings": asdict(self.settings),
            "train": self.train_ids,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    # --- batches ---------------------------------------------------------------------------------------

    def batches(self, validation: bool, first_batch: int):
        """An iterator over (augmented) batches from overall batch ``first_batch`` on, each seeded by (seed, fold,
        purpose, its index), and what closes it (its worker pool, if it has one)."""
        from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
        from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

        cases = self.val_cases if validation else self.train_cases
        work = self.augmentation.for_loader(validation)
        purpose = "val" if validation else "train"
        workers = validation_workers(self.workers) if validation else self.workers
        loader = PatchLoader(
            cases,
            self.configuration.batch_size,
            work.patch_size,
            self.patch_size,
            self.is_2d,
            work.transforms,
            work.draw,
            work.augment,
            seed_of=lambda index: derived_seed(self.settings.seed, self.fold, purpose, index),
            first_batch=first_batch,
            producers=max(1, workers),
        )
        if workers <= 0:
            return SingleThreadedAugmenter(loader, None), None
        cuda = self.device.type == "cuda"
        # How often an idle worker looks for room in its queue: a CPU step takes seconds, and at
        # batchgenerators' 0.02 s the polling alone costs more CPU than cutting the patches.
        wait = 0.02 if cuda else 0.1
        augmenter = MultiThreadedAugmenter(
            loader, None, workers, num_cached_per_queue=2, seeds=None, pin_memory=cuda, wait_time=wait
        )
        return augmenter, augmenter

    def to_device(self, batch):
        """(data, deep-supervision targets) on the training device; a batch cut for augmentation on the
        device is augmented there."""
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        data, seg = self.augmentation.on_device(batch)
        data = data.contiguous(memory_format=self.memory_format)
        if self.labels.regions:
            seg = self.labels.target(seg)
        return data, target_pyramid(seg, self.ds_scales)

    # --- one epoch ---------------------------------------------------------------------------------------

    def outputs(self, data) -> list[torch.Tensor]:
        """The network's outputs, highest resolution first (one without deep supervision)."""
        outputs = self.network(data)
        return outputs if isinstance(outputs, (list, tuple)) else [outputs]

    def train_step(self, data, targets) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.amp):
            loss = self.loss(self.outputs(data), targets)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.network.parameters(), self.settings.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(self.network.parameters(), self.settings.grad_clip)
            self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def validation_step(self, data, targets):
        with torch.autocast(self.device.type, enabled=self.amp):
            outputs = self.outputs(data)
            loss = self.loss(outputs, targets)
        return float(loss), self.labels.hard_counts(outputs[0].float(), targets[0])

    @contextmanager
    def batch_stream(self, validation: bool, first_batch: int = 0):
        """(data, targets) on the device from overall batch ``first_batch`` on, the next batch prepared while the
        current one trains; one stream (and worker pool) serves every epoch."""
        generator, closer = self.batches(validation, first_batch)
        stream = Prefetcher(lambda: self.to_device(next(generator)), self.device)
        try:
            yield stream
        finally:
            stream.close()
            if closer is not None:
                closer._finish()

    @contextmanager
    def epoch_streams(self):
        """The training and validation batch streams of the epochs still to train."""
        train_first = self.start_epoch * self.settings.iterations_per_epoch
        val_first = self.start_epoch * self.settings.val_iterations
        with self.batch_stream(False, train_first) as train, self.batch_stream(True, val_first) as val:
            yield train, val

    def run_epoch(self, epoch: int, train_batches, val_batches) -> None:
        started = time.perf_counter()
        lr = learning_rate(self.recipe, epoch, self.settings.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with Heartbeat(f"{self.name}: epoch {epoch + 1}/{self.settings.epochs}") as heartbeat:
            self.network.train()
            losses = []
            for i in range(self.settings.iterations_per_epoch):
                heartbeat.beat(f"training iteration {i + 1}/{self.settings.iterations_per_epoch}")
                losses.append(self.train_step(*next(train_batches)))
            self.network.eval()
            val_losses, counts = [], 0
            for i in range(self.settings.val_iterations):
                heartbeat.beat(f"validation iteration {i + 1}/{self.settings.val_iterations}")
                loss, batch_counts = self.validation_step(*next(val_batches))
                val_losses.append(loss)
                counts = counts + batch_counts
        tp, fp, fn = counts.double().cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = 2 * tp / (2 * tp + fp + fn)
        mean_fg = float(np.nanmean(dice)) if not np.all(np.isnan(dice)) else 0.0
        previous = self.history["ema_fg_dice"]
        ema = mean_fg if not previous else 0.9 * previous[-1] + 0.1 * mean_fg
        for key, value in (
            ("train_loss", float(np.mean(losses))),
            ("val_loss", float(np.mean(val_losses))),
            ("pseudo_dice", [None if np.isnan(d) else float(d) for d in dice]),
            ("mean_fg_dice", mean_fg),
            ("ema_fg_dice", ema),
            ("lr", lr),
            ("epoch_seconds", time.perf_counter() - started),
        ):
            self.history[key].append(value)

    # --- checkpoints and progress ----------------------------------------------------------------------

    def state(self, epoch_done: int) -> dict:
        return {
            "network_weights": self.network.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.scaler.state_dict() if self.scaler is not None else None,
            "logging": self.history,
            "best_ema": self.best_ema,
            "current_epoch": epoch_done,
            "signature": self.signature(),
            "configuration": self.configuration.name,
            "fold": str(self.fold),
            "inference_allowed_mirroring_axes": list(self.augmentation.settings.mirror_axes),
        }

    def save_resumable(self, epoch_done: int, best: bool = False) -> None:
        self.checkpoints.save(self.state(epoch_done), best)

    def try_resume(self) -> None:
        found = self.checkpoints.newest_readable(self.signature(), self.device)
        if found is None:
            return
        path, checkpoint = found
        self.network.load_state_dict(checkpoint["network_weights"])
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.scaler is not None and checkpoint["grad_scaler_state"] is not None:
            self.scaler.load_state_dict(checkpoint["grad_scaler_state"])
        self.history = checkpoint["logging"]
        self.best_ema = checkpoint["best_ema"]
        self.start_epoch = checkpoint["current_epoch"]
        log.info("resuming %s after epoch %d", path, self.start_epoch)

    def write_log(self) -> str:
        """training_log.jsonl: one line per finished epoch, rewritten from the history (so a resumed run never
        shows an epoch twice). Returns the last line."""
        epochs = len(self.history["train_loss"])
        lines = [json.dumps({"epoch": e, **{k: v[e] for k, v in self.history.items()}}) for e in range(epochs)]
        with atomic_path(self.out / "training_log.jsonl") as tmp:
            tmp.write_text("".join(line + "\n" for line in lines))
        return lines[-1] if lines else ""

    def epoch_summary(self) -> str:
        h = self.history
        dice = " ".join("-" if d is None else f"{d:.3f}" for d in h["pseudo_dice"][-1])
        return (
            f"train loss {h['train_loss'][-1]:.4f}, val loss {h['val_loss'][-1]:.4f}, pseudo Dice {dice} "
            f"(EMA {h['ema_fg_dice'][-1]:.4f}), {h['epoch_seconds'][-1]:.1f} s"
        )

    def fit(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.pretrained:
            save_json(self.pretrained, self.out / "pretrained.json")
            log.info("started from %s (%d tensors loaded)", self.pretrained["source"], self.pretrained["loaded"])
        self.try_resume()
        countdown = Countdown(f"{self.name}: epoch", self.settings.epochs, done=self.start_epoch)
        if self.start_epoch < self.settings.epochs:
            with self.epoch_streams() as (train_batches, val_batches):
                self.train_epochs(countdown, train_batches, val_batches)
        if self.start_epoch == self.settings.epochs:
            self.write_log()
            write_progress(self.history, self.out / "progress.png")
        self.checkpoints.finish()

    def train_epochs(self, countdown: Countdown, train_batches, val_batches) -> None:
        drawn = time.monotonic()
        for epoch in range(self.start_epoch, self.settings.epochs):
            self.run_epoch(epoch, train_batches, val_batches)
            ema = self.history["ema_fg_dice"][-1]
            best = self.best_ema is None or ema > self.best_ema
            if best:
                self.best_ema = ema
            # The resumable state first: whatever is logged below belongs to a saved epoch.
            self.save_resumable(epoch + 1, best=best)
            log.info("epoch %d: %s", epoch, self.write_log())
            countdown.step(self.epoch_summary())
            if epoch == self.settings.epochs - 1 or time.monotonic() - drawn >= PROGRESS_INTERVAL_S:
                write_progress(self.history, self.out / "progress.png")
                drawn = time.monotonic()


def workers_for(threads: int, device: torch.device) -> int:
    """Loader worker processes (segflow.resources.loader_workers, which sizes the job's memory too)."""
    return loader_workers(threads, device.type == "cuda")


@contextmanager
def attempt_log(out_dir: Path):
    """Each start of a training also logs to its own ``training_log_<UTC time>.txt`` in the fold folder, as
    nnU-Net does: the rule's log holds the latest attempt only (Snakemake clears it before a retry), these
    files show what every attempt of a resumed training did."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
    handler = logging.FileHandler(out_dir / f"training_log_{stamp}.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("segflow")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def train(
    plans_path,
    dataset_json_path,
    splits_path,
    preprocessed,
    configuration,
    fold,
    out_dir,
    settings: TrainSettings,
    device: str = "auto",
    threads: int = 1,
    previous_stage_dirs=(),
) -> None:
    resolved = resolve_device(device)
    torch.set_num_threads(max(1, threads))
    trainer = Trainer(
        load_json(plans_path),
        load_json(dataset_json_path),
        configuration,
        Path(preprocessed),
        load_json(splits_path),
        fold,
        Path(out_dir),
        settings,
        str(resolved),
        workers_for(threads, resolved),
        previous_stage_dirs,
    )
    with attempt_log(Path(out_dir)):
        log.info(
            "training %s fold %s on %s: %d train / %d val cases, patch %s, batch %d",
            configuration,
            fold,
            trainer.device,
            len(trainer.train_cases),
            len(trainer.val_cases),
            trainer.patch_size,
            trainer.configuration.batch_size,
        )
        trainer.fit()
