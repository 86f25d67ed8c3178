"""The trainer's augmentation: one object that tells the patch loader what to cut and what to do with each
batch, and finishes on the training device what the loader left, wherever ``augment_on`` and the device put
the work. The trainer asks it the same two questions either way (``for_loader``, ``on_device``).

- ``augment_on: workers``: the loader cuts enlarged patches and runs batchgeneratorsv2's pipeline sample by
  sample (``augment.training_pipeline``), as nnunetv2 does.
- ``augment_on: device`` (default): the loader cuts and draws each sample's parameters
  (``device_augment.BatchedAugmentation``); on a CPU it also applies them to the batch there (a loader worker on
  one thread, while torch computes the step: in the training process the small tensor operations wait on each
  other's threads, which on a busy machine costs several times more); on a GPU the training device applies them.
- Validation batches get label -1 as 0 and the cascade's one-hot channels, in the loader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms

from segflow.train.augment import training_pipeline, validation_pipeline
from segflow.train.device_augment import BatchedAugmentation, cascade_degradation, degrade_previous_stage
from segflow.train.patch_geometry import AugmentationSettings

PLACES = ("device", "workers")


@dataclass(frozen=True)
class LoaderWork:
    """What the patch loader does for a batch: the patch it cuts, a per-sample pipeline, or the batched
    augmentation's draw (and, where the batch is augmented in the loader, its application)."""

    patch_size: list[int]
    transforms: Callable | None = None
    draw: Callable | None = None
    augment: Callable | None = None


class Augmentation:
    """nnU-Net's training augmentation of one trainer's patches."""

    def __init__(
        self,
        patch_size,
        masked_channels=(),
        label_values=None,
        previous_labels=None,
        augment_on: str = "device",
        device: torch.device | None = None,
    ):
        if augment_on not in PLACES:
            raise ValueError(f"augment_on is 'device' or 'workers', not {augment_on!r}")
        self.settings = AugmentationSettings(patch_size)
        self.masked_channels = list(masked_channels)
        self.previous_labels = previous_labels
        self.augment_on = augment_on
        self.in_the_loader = augment_on == "device" and (device is None or device.type == "cpu")
        self.batched = BatchedAugmentation(self.settings, self.masked_channels, label_values)
        # (with augment_on: workers the cascade's degradation is in the per-sample pipeline)
        batched_cascade = previous_labels and augment_on == "device"
        self.degradation = ComposeTransforms(cascade_degradation(previous_labels)) if batched_cascade else None

    def for_loader(self, validation: bool) -> LoaderWork:
        if validation:
            return LoaderWork(self.settings.patch_size, transforms=validation_pipeline(self.previous_labels))
        enlarged = self.settings.enlarged_patch
        if self.augment_on == "workers":
            pipeline = training_pipeline(self.settings, self.masked_channels, self.previous_labels)
            return LoaderWork(enlarged, transforms=pipeline)
        return LoaderWork(enlarged, draw=self.batched.draw, augment=self.augmented if self.in_the_loader else None)

    def on_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(data, seg) of a batch on the training device: augmented there if the loader left it to the device."""
        return self.augmented(batch) if "augmentation" in batch else (batch["data"], batch["seg"])

    @torch.no_grad()
    def augmented(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(data, seg) of a batch from ``PatchLoader.cut_for_the_device``, augmented where its tensors are; the
        cascade's previous stage after the rest, as nnunetv2 orders it."""
        data, seg = self.batched.apply(batch)
        if self.degradation is not None:
            seed = int(batch["augmentation"]["noise_seed"])
            data, seg = degrade_previous_stage(data, seg, self.previous_labels, self.degradation, seed)
        return data, seg
