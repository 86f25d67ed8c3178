"""nnU-Net's training augmentation (method reference §5.6) for a whole batch where the batch is (issue 14).

The loader workers cut the enlarged patches and draw each sample's parameters (``draw``: numpy's generator,
seeded from (seed, fold, purpose, batch index)), row by row of ``augment.TABLE``; ``apply`` applies the rows
to the whole batch in a few tensor operations each (``batched.py``'s kernels, each equal to batchgeneratorsv2's
transform given the same parameters): on a GPU in the training process, on a CPU in the worker that cut the
batch, on one thread beside the training step. The cascade's previous stage is degraded after them, sample by
sample, with batchgeneratorsv2's own transforms (``degrade_previous_stage``).

Parameters travel with the batch as small numpy arrays, so a batch depends only on the worker's seed, never
on the device or the thread that augments it.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from segflow.train.augment import TABLE, DeviceBatch, cascade_transforms
from segflow.train.patch_geometry import AugmentationSettings


class BatchedAugmentation:
    """Draw (in a worker) and apply (on the training GPU, or in the worker on a CPU) nnU-Net's training
    augmentation of a batch, the rows of ``augment.TABLE`` in order."""

    def __init__(self, settings: AugmentationSettings, masked_channels=(), label_values=None):
        self.settings = settings
        self.masked_channels = list(masked_channels)
        # the values the label maps may hold (segflow.labels.label_values): resampling them need not ask the device
        self.label_values = label_values

    def draw(self, batch_size: int, channels: int) -> dict[str, np.ndarray]:
        """The parameters of a batch's samples (in the worker), and the seed of its noise."""
        rows = [self.draw_sample(channels) for _ in range(batch_size)]
        params = {key: np.stack([r[key] for r in rows]) for key in rows[0]}
        params["noise_seed"] = np.array(np.random.randint(0, 2**31 - 1), dtype=np.int64)
        return params

    def draw_sample(self, channels: int) -> dict[str, np.ndarray]:
        return {key: value for row in TABLE for key, value in row.draw(self.settings, channels).items()}

    def apply(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented patches of a batch from ``PatchLoader.cut_for_the_device`` whose tensors are on the
        device: final patches B x C x ... and B x S x ... (int16), the enlarged patches of the samples to
        rotate or scale, and the parameters."""
        augmented = DeviceBatch(
            batch["data"],
            batch["seg"],
            batch["moved_data"],
            batch["moved_seg"],
            {k: torch.as_tensor(v) for k, v in batch["augmentation"].items()},
            self.settings,
            self.masked_channels,
            self.label_values,
        )
        for row in TABLE:
            row.apply(augmented)
        return augmented.image, augmented.seg


def previous_stage_one_hot(data: torch.Tensor, seg: torch.Tensor, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """The cascade's previous stage (segmentation channel 1) as one-hot image channels after the image's, for a
    whole batch on its device (batchgeneratorsv2's MoveSegAsOneHotToDataTransform, which allocates on the CPU)."""
    previous = seg[:, 1:2]
    one_hot = [(previous == label).to(data.dtype) for label in labels]
    return torch.cat([data, *one_hot], dim=1), seg[:, :1]


def on_input_device(operator):
    """A batchgeneratorsv2 binary operator (its FFT convolution) run on its input's device: the transform builds
    the structuring element on the CPU."""

    def apply(mask: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
        return operator(mask, structure.to(mask.device))

    apply.__name__ = operator.__name__
    return apply


def cascade_degradation(previous_stage_labels) -> list:
    """nnunetv2's random degradation of the one-hot previous stage (morphology, then removal of a connected
    component), applied sample by sample where the batch is: batchgeneratorsv2's transforms with the same
    draws, the morphology on the device, the component labelling (scipy) on the CPU for the samples drawn."""
    from batchgeneratorsv2.transforms.nnunet.remove_connected_components import (
        RemoveRandomConnectedComponentFromOneHotEncodingTransform,
    )
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    class RemoveComponentOnTheCPU(RemoveRandomConnectedComponentFromOneHotEncodingTransform):
        def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
            if img.device.type == "cpu" or not params["apply_to_channels"]:
                return super()._apply_to_image(img, **params)
            return super()._apply_to_image(img.cpu(), **params).to(img.device)

    _, morphology, removal = cascade_transforms(previous_stage_labels, degrade=True)
    operators = morphology.transform.any_of_these  # drawn by index: the same draws pick the same operator
    morphology.transform.any_of_these = tuple(on_input_device(o) for o in operators)
    component = removal.transform
    removal = RandomTransform(
        RemoveComponentOnTheCPU(
            channel_idx=component.channel_idx,
            fill_with_other_class_p=component.fill_with_other_class_p,
            dont_do_if_covers_more_than_x_percent=component.dont_do_if_covers_more_than_x_percent,
            p_per_label=component.p_per_label,
        ),
        apply_probability=removal.apply_probability,
    )
    return [morphology, removal]


@contextmanager
def numpy_seeded(seed: int):
    """numpy's global generator seeded for the block (batchgeneratorsv2 draws from it), restored after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def degrade_previous_stage(data, seg, labels, degradation, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(image + one-hot previous stage, target) of a batch whose segmentation holds (target, previous stage),
    the one-hot channels degraded sample by sample by ``degradation`` (a ComposeTransforms of
    ``cascade_degradation``) where the batch is; the draws come from ``seed`` alone."""
    data, seg = previous_stage_one_hot(data, seg, labels)
    with torch.random.fork_rng(devices=[]), numpy_seeded(seed):
        torch.manual_seed(seed)
        degraded = [degradation(image=image)["image"] for image in data]
    return torch.stack(degraded), seg
