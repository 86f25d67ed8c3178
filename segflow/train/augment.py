"""nnU-Net's training augmentation as one table (method reference §5.6): ``TABLE`` lists the transforms in
nnunetv2 2.8.1's order, each with its probabilities and ranges, and each row says three things about its
transform:

* ``worker``: batchgeneratorsv2's transforms that nnunetv2 composes for it (one sample at a time, in the loader
  workers: ``augment_on: workers``, and the pipelines below);
* ``draw``: one sample's parameters, drawn from numpy's global generator as the loader workers do for
  ``augment_on: device`` (the default);
* ``apply``: the transform of a whole batch with those parameters, in a few tensor operations where the batch
  is (``batched.py``'s kernels; ``device_augment.BatchedAugmentation`` runs the rows in order).

A sample drawn with the same numpy and torch seeds is augmented by ``training_pipeline`` exactly as by
nnunetv2 (tests/test_nnunetv2_parity.py compares with pipelines recorded from nnunetv2); ``draw`` has the
distributions of batchgeneratorsv2's own draws (tests/test_device_augment.py), and ``apply`` given
batchgeneratorsv2's parameters gives its output (tests/test_device_pipeline.py). The rows:

* (dummy 2D: the first axis folded into the channels, when the 3D patch is > 3x flatter along it)
* rotation (p 0.2; 3D +-30 deg per axis, 2D +-180 deg, or +-15 deg for 2D patches of aspect > 1.5, dummy
  2D +-180 deg in-plane) and scaling (p 0.2, one factor U(0.7, 1.4) for all axes), centre crop to the
  patch; the label map is resampled per label, -1 outside the image
* Gaussian noise (p 0.1, variance U(0, 0.1)), Gaussian blur (p 0.2, sigma U(0.5, 1) per axis and channel,
  each channel with p 0.5), brightness (p 0.15, x U(0.75, 1.25)), contrast (p 0.15), simulated low
  resolution (p 0.25, zoom U(0.5, 1), each channel with p 0.5), gamma on the inverted image (p 0.1), gamma
  (p 0.3), mirroring (each axis with p 0.5)
* channels normalised inside the non-zero mask are zeroed outside it; label -1 becomes 0
* cascade (after the table): the previous stage's segmentation becomes one-hot channels of the foreground
  labels, then is degraded at random (binary operators, p 0.4, each label p 0.5, ball radius U(1, 8); removal
  of one connected component smaller than 15 % of the patch, p 0.2, each label p 0.5)

Region targets and the deep-supervision pyramid are made on the training device (``loop.py``), not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform

from segflow.train import batched
from segflow.train.patch_geometry import AugmentationSettings, rotation_matrix


@dataclass
class DeviceBatch:
    """A batch as the device pipeline augments it in place: final patches B x C x ... and B x S x ... (int16),
    the enlarged patches of the samples to rotate or scale, the parameters (tensors), and what the trainer
    knows of its patches."""

    image: torch.Tensor
    seg: torch.Tensor
    moved_image: torch.Tensor
    moved_seg: torch.Tensor
    params: dict[str, torch.Tensor]
    settings: AugmentationSettings
    masked_channels: list[int]
    label_values: list[int] | None  # the values the label maps may hold: resampling need not ask the device


@dataclass(frozen=True)
class Transform:
    """A row of the table: applied to a sample with ``probability``, then to each of its channels with
    ``per_channel``, its factor or sigma drawn from ``values``."""

    name: str
    probability: float = 1.0
    values: tuple[float, float] = (1.0, 1.0)
    per_channel: float = 1.0

    def worker(self, settings: AugmentationSettings, masked_channels) -> list:
        """batchgeneratorsv2's transforms of one sample, as nnunetv2 composes them."""
        raise NotImplementedError

    def draw(self, settings: AugmentationSettings, channels: int) -> dict[str, np.ndarray]:
        """One sample's parameters, drawn from numpy's global generator."""
        return {}

    def apply(self, batch: DeviceBatch) -> None:
        """The transform of the whole batch, in place, with the parameters drawn for its samples."""
        raise NotImplementedError


@dataclass(frozen=True)
class RotationAndScaling(Transform):
    """One resampling of the enlarged patch (per-sample matrices), cropped to the patch at its centre; the
    rotation range is the patch's (``AugmentationSettings``), ``probability`` that of rotating."""

    scaling_probability: float = 1.0

    def worker(self, settings, masked_channels) -> list:
        # Imported here: it imports pandas and SciPy, which a training that augments on its device never needs.
        from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

        spatial = SpatialTransform(
            settings.patch_size[1:] if settings.dummy_2d else settings.patch_size,
            patch_center_dist_from_border=0,
            random_crop=False,
            p_elastic_deform=0,
            p_rotation=self.probability,
            rotation=settings.rotation,
            p_scaling=self.scaling_probability,
            scaling=self.values,
            p_synchronize_scaling_across_axes=1,
            bg_style_seg_sampling=False,
            border_mode_seg="constant",
            padding_value_seg=-1,
        )
        return [Convert3DTo2DTransform(), spatial, Convert2DTo3DTransform()] if settings.dummy_2d else [spatial]

    def draw(self, settings, channels) -> dict[str, np.ndarray]:
        rotate, scale = np.random.uniform() < self.probability, np.random.uniform() < self.scaling_probability
        angles = [np.random.uniform(*settings.rotation) if rotate else 0.0 for _ in range(settings.spatial_dims)]
        factor = np.random.uniform(*self.values) if scale else 1.0
        return {"spatial": np.array(rotate or scale), "matrix": rotation_matrix(angles, factor).astype(np.float32)}

    def apply(self, batch: DeviceBatch) -> None:
        """Rows of the rotated or scaled samples replaced by their resampled enlarged patches."""
        moved = batch.params["spatial"].nonzero().flatten()
        if not len(moved):
            return
        matrices, patch, labels = batch.params["matrix"][moved], batch.settings.patch_size, batch.label_values
        image, seg = batch.moved_image, batch.moved_seg
        if batch.settings.dummy_2d:  # the first axis folded into the channels, an in-plane transform per slice
            n, c, z = image.shape[:3]
            flat_image, flat_seg = batched.resample(
                image.flatten(1, 2), seg.flatten(1, 2), matrices, patch[1:], labels=labels
            )
            resampled = flat_image.view(n, c, z, *patch[1:]), flat_seg.view(n, batch.seg.shape[1], z, *patch[1:])
        else:
            resampled = batched.resample(image, seg, matrices, patch, labels=labels)
        rows = moved.to(batch.image.device)
        batch.image[rows], batch.seg[rows] = resampled


@dataclass(frozen=True)
class GaussianNoise(Transform):
    """Noise of one standard deviation U(``values``) for all channels of a sample (nnunetv2 calls the range a
    variance; batchgeneratorsv2 uses it as the standard deviation)."""

    def worker(self, settings, masked_channels) -> list:
        noise = GaussianNoiseTransform(noise_variance=self.values, p_per_channel=1, synchronize_channels=True)
        return [RandomTransform(noise, apply_probability=self.probability)]

    def draw(self, settings, channels) -> dict[str, np.ndarray]:
        applied = np.random.uniform() < self.probability
        sigma = np.random.uniform(*self.values) if applied else 0.0
        return {"noise": np.full(channels, sigma, dtype=np.float32), "noise_applied": np.full(channels, applied)}

    def apply(self, batch: DeviceBatch) -> None:
        # the batch's noise comes from the seed its worker drew after its samples' parameters
        generator = torch.Generator(batch.image.device).manual_seed(int(batch.params["noise_seed"]))
        batched.add_noise(batch.image, batch.params["noise"], batch.params["noise_applied"], generator)


@dataclass(frozen=True)
class GaussianBlur(Transform):
    """Separable blur, sigma U(``values``) per channel and axis."""

    def worker(self, settings, masked_channels) -> list:
        blur = GaussianBlurTransform(
            blur_sigma=self.values,
            synchronize_channels=False,
            synchronize_axes=False,
            p_per_channel=self.per_channel,
            benchmark=True,
        )
        return [RandomTransform(blur, apply_probability=self.probability)]

    def draw(self, settings, channels) -> dict[str, np.ndarray]:
        applied = np.random.uniform() < self.probability
        p = {"blur_applied": applied & (np.random.uniform(size=channels) < self.per_channel)}
        p["blur"] = np.random.uniform(*self.values, size=(channels, len(settings.patch_size))).astype(np.float32)
        return p

    def apply(self, batch: DeviceBatch) -> None:
        batched.blur(batch.image, batch.params["blur"], batch.params["blur_applied"])


def around_one(low: float, high: float) -> float:
    """batchgeneratorsv2's BGContrast draw: half the time below 1, U(low, 1), else U(1, high)."""
    if np.random.uniform() < 0.5 and low < 1:
        return np.random.uniform(low, 1)
    return np.random.uniform(max(low, 1), high)


@dataclass(frozen=True)
class PerChannelFactor(Transform):
    """A transform of a factor per channel, each drawn around one (``around_one``); factor 1 where the
    transform does not apply."""

    def draw(self, settings, channels) -> dict[str, np.ndarray]:
        applied = np.random.uniform() < self.probability
        factors = [around_one(*self.values) if applied else 1.0 for _ in range(channels)]
        return {f"{self.name}_applied": np.full(channels, applied), self.name: np.array(factors, dtype=np.float32)}

    def drawn(self, batch: DeviceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return batch.params[self.name], batch.params[f"{self.name}_applied"]


@dataclass(frozen=True)
class Brightness(PerChannelFactor):
    def worker(self, settings, masked_channels) -> list:
        brightness = MultiplicativeBrightnessTransform(
            multiplier_range=BGContrast(self.values), synchronize_channels=False, p_per_channel=1
        )
        return [RandomTransform(brightness, apply_probability=self.probability)]

    def apply(self, batch: DeviceBatch) -> None:
        batched.multiply(batch.image, *self.drawn(batch))


@dataclass(frozen=True)
class Contrast(PerChannelFactor):
    """Contrast around each channel's mean, clipped to its former range."""

    def worker(self, settings, masked_channels) -> list:
        contrast = ContrastTransform(
            contrast_range=BGContrast(self.values), preserve_range=True, synchronize_channels=False, p_per_channel=1
        )
        return [RandomTransform(contrast, apply_probability=self.probability)]

    def apply(self, batch: DeviceBatch) -> None:
        batched.contrast(batch.image, *self.drawn(batch), preserve_range=True)


@dataclass(frozen=True)
class Gamma(PerChannelFactor):
    """Gamma per channel on its range scaled to [0, 1] (on the inverted image if ``inverted``), mean and spread
    kept."""

    inverted: bool = False

    def worker(self, settings, masked_channels) -> list:
        gamma = GammaTransform(
            gamma=BGContrast(self.values),
            p_invert_image=int(self.inverted),
            synchronize_channels=False,
            p_per_channel=1,
            p_retain_stats=1,
        )
        return [RandomTransform(gamma, apply_probability=self.probability)]

    def apply(self, batch: DeviceBatch) -> None:
        factors, applied = self.drawn(batch)
        inverted, retain_stats = torch.full_like(applied, self.inverted), torch.ones_like(applied)
        batched.gamma(batch.image, factors, applied, inverted, retain_stats)


@dataclass(frozen=True)
class LowResolution(Transform):
    """Each channel downsampled by one zoom U(``values``) for all its axes (not the first in dummy 2D) and
    back."""

    def worker(self, settings, masked_channels) -> list:
        low_resolution = SimulateLowResolutionTransform(
            scale=self.values,
            synchronize_channels=False,
            synchronize_axes=True,
            ignore_axes=(0,) if settings.dummy_2d else None,
            allowed_channels=None,
            p_per_channel=self.per_channel,
        )
        return [RandomTransform(low_resolution, apply_probability=self.probability)]

    def draw(self, settings, channels) -> dict[str, np.ndarray]:
        applied = np.random.uniform() < self.probability
        p = {"low_res_applied": applied & (np.random.uniform(size=channels) < self.per_channel)}
        zoom = np.repeat(np.random.uniform(*self.values, size=(channels, 1)), len(settings.patch_size), axis=1)
        if settings.dummy_2d:
            zoom[:, 0] = 1
        p["low_res"] = zoom.astype(np.float32)
        return p

    def apply(self, batch: DeviceBatch) -> None:
        batched.simulate_low_resolution(batch.image, batch.params["low_res"], batch.params["low_res_applied"])


@dataclass(frozen=True)
class Mirror(Transform):
    """Each axis flipped with ``probability`` (batchgeneratorsv2's MirrorTransform has it built in)."""

    def worker(self, settings, masked_channels) -> list:
        return [MirrorTransform(allowed_axes=settings.mirror_axes)]

    def draw(self, settings, channels) -> dict[str, np.ndarray]:
        return {"mirror": np.random.uniform(size=len(settings.patch_size)) < self.probability}

    def apply(self, batch: DeviceBatch) -> None:
        batched.mirror(batch.image, batch.params["mirror"])
        batched.mirror(batch.seg, batch.params["mirror"])


@dataclass(frozen=True)
class MaskOutsideNonzero(Transform):
    """Channels normalised inside the non-zero mask set to 0 outside it (label map -1 there)."""

    def worker(self, settings, masked_channels) -> list:
        if not masked_channels:
            return []
        return [MaskImageTransform(apply_to_channels=list(masked_channels), channel_idx_in_seg=0, set_outside_to=0)]

    def apply(self, batch: DeviceBatch) -> None:
        batched.mask_outside(batch.image, batch.seg, batch.masked_channels)


@dataclass(frozen=True)
class UnlabelledToBackground(Transform):
    """Label -1 (outside the image) becomes 0."""

    def worker(self, settings, masked_channels) -> list:
        return [RemoveLabelTansform(-1, 0)]

    def apply(self, batch: DeviceBatch) -> None:
        batch.seg.masked_fill_(batch.seg == -1, 0)  # (boolean indexing would wait for the device to count voxels)


#: nnunetv2 2.8.1's training augmentation, in its order.
TABLE: tuple[Transform, ...] = (
    RotationAndScaling("spatial", probability=0.2, scaling_probability=0.2, values=(0.7, 1.4)),
    GaussianNoise("noise", probability=0.1, values=(0.0, 0.1)),
    GaussianBlur("blur", probability=0.2, values=(0.5, 1.0), per_channel=0.5),
    Brightness("brightness", probability=0.15, values=(0.75, 1.25)),
    Contrast("contrast", probability=0.15, values=(0.75, 1.25)),
    LowResolution("low_res", probability=0.25, values=(0.5, 1.0), per_channel=0.5),
    Gamma("gamma_inverted", probability=0.1, values=(0.7, 1.5), inverted=True),
    Gamma("gamma", probability=0.3, values=(0.7, 1.5)),
    Mirror("mirror", probability=0.5),
    MaskOutsideNonzero("mask"),
    UnlabelledToBackground("unlabelled"),
)


def transform(name: str) -> Transform:
    """The row of the table called ``name``."""
    return next(row for row in TABLE if row.name == name)


def cascade_transforms(previous_stage_labels, degrade: bool) -> list:
    """The previous stage's segmentation (segmentation channel 1) as one-hot image channels; in training
    also degraded at random so that the network learns to correct it rather than copy it."""
    from batchgeneratorsv2.transforms.nnunet.seg_to_onehot import MoveSegAsOneHotToDataTransform

    labels = list(previous_stage_labels)
    transforms = [
        MoveSegAsOneHotToDataTransform(source_channel_idx=1, all_labels=labels, remove_channel_from_source=True)
    ]
    if not degrade:
        return transforms
    from batchgeneratorsv2.transforms.nnunet.random_binary_operator import ApplyRandomBinaryOperatorTransform
    from batchgeneratorsv2.transforms.nnunet.remove_connected_components import (
        RemoveRandomConnectedComponentFromOneHotEncodingTransform,
    )

    channels = list(range(-len(labels), 0))
    return transforms + [
        RandomTransform(
            ApplyRandomBinaryOperatorTransform(channel_idx=channels, strel_size=(1, 8), p_per_label=0.5),
            apply_probability=0.4,
        ),
        RandomTransform(
            RemoveRandomConnectedComponentFromOneHotEncodingTransform(
                channel_idx=channels,
                fill_with_other_class_p=0,
                dont_do_if_covers_more_than_x_percent=0.15,
                p_per_label=0.5,
            ),
            apply_probability=0.2,
        ),
    ]


def training_pipeline(settings: AugmentationSettings, masked_channels=(), previous_stage_labels=None):
    """nnU-Net's training augmentation of one sample {'image': C x ..., 'segmentation': S x ...}: the table's
    batchgeneratorsv2 transforms, then the cascade's."""
    transforms = [t for row in TABLE for t in row.worker(settings, masked_channels)]
    if previous_stage_labels:
        transforms += cascade_transforms(previous_stage_labels, degrade=True)
    return ComposeTransforms(transforms)


def validation_pipeline(previous_stage_labels=None):
    """What validation batches get: label -1 becomes 0, and the cascade's one-hot channels."""
    transforms = transform("unlabelled").worker(None, ())
    if previous_stage_labels:
        transforms += cascade_transforms(previous_stage_labels, degrade=False)
    return ComposeTransforms(transforms)
