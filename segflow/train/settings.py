"""A training run's settings (the config's ``train`` section) and the seeds derived from them."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    seed: int = 0
    initial_lr: float = 1e-2
    weight_decay: float = 3e-5
    momentum: float = 0.99
    grad_clip: float = 12.0
    channels_last: bool | None = None  # None: on CUDA for 3D networks (cuDNN's faster layout), else off
    # "device": workers cut patches and draw their parameters, whole batches are augmented (on a GPU by the
    # training device, on a CPU by the worker); "workers": each worker augments its samples with
    # batchgeneratorsv2, as nnunetv2 does (segflow/train/augmentation.py)
    augment_on: str = "device"
    # a segflow or nnU-Net v2 fold checkpoint every fold starts from (segflow/train/pretrained.py)
    pretrained_weights: str | None = None


def settings_from_config(train: dict, pretrained_weights: str | None = None) -> TrainSettings:
    """The training settings of the config's ``train`` section."""
    return TrainSettings(
        epochs=train["epochs"],
        iterations_per_epoch=train["iterations_per_epoch"],
        val_iterations=train["val_iterations"],
        seed=train["seed"],
        augment_on=train["augment_on"],
        pretrained_weights=pretrained_weights,
    )


def derived_seed(*parts) -> int:
    """A 32-bit seed from any mix of ints and strings (stable across runs and machines)."""
    words = [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])
