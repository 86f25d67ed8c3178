"""nnU-Net's data augmentation (method reference §5.6), composed from batchgeneratorsv2's transforms.

This per-sample pipeline runs in the loader workers when training with ``augment_on: workers``; by default
segflow applies the same transforms to whole batches on the training device (``device_augment.py``), and
validation batches always come from here.

nnunetv2 2.8.1 augments each sample with batchgeneratorsv2; segflow composes the same transforms with the
same parameters and in the same order, so that a sample drawn with the same numpy and torch seeds is
augmented identically (tests/test_nnunetv2_parity.py compares with pipelines recorded from nnunetv2):

* (dummy 2D: the first axis folded into the channels, when the 3D patch is > 3x flatter along it)
* rotation (p 0.2; 3D +-30 deg per axis, 2D +-180 deg, or +-15 deg for 2D patches of aspect > 1.5, dummy
  2D +-180 deg in-plane) and scaling (p 0.2, one factor U(0.7, 1.4) for all axes), centre crop to the
  patch; the label map is resampled per label, -1 outside the image
* Gaussian noise (p 0.1, variance U(0, 0.1)), Gaussian blur (p 0.2, sigma U(0.5, 1) per axis and channel,
  each channel with p 0.5), brightness (p 0.15, x U(0.75, 1.25)), contrast (p 0.15), simulated low
  resolution (p 0.25, zoom U(0.5, 1), each channel with p 0.5), gamma on the inverted image (p 0.1), gamma
  (p 0.3), mirroring (each axis with p 0.5)
* channels normalised inside the non-zero mask are zeroed outside it; label -1 becomes 0
* cascade: the previous stage's segmentation becomes one-hot channels of the foreground labels, then is
  degraded at random (binary operators, p 0.4, each label p 0.5, ball radius U(1, 8); removal of one
  connected component smaller than 15 % of the patch, p 0.2, each label p 0.5)

Region targets and the deep-supervision pyramid are made on the training device (``loop.py``), not here.
The rotation range, dummy-2D decision, mirror axes and the enlarged patch the loader cuts are nnunetv2's
``configure_rotation_dummyDA_mirroring_and_inital_patch_size``, reimplemented in ``AugmentationSettings``.
"""

from __future__ import annotations

import math

import numpy as np
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

ANISOTROPY_THRESHOLD = 3
SCALE_RANGE = (0.7, 1.4)
# nnU-Net sizes the enlarged patch with the scale range of its first version, not the one it applies.
ENLARGEMENT_SCALE_RANGE = (0.85, 1.25)


def degrees(d: float) -> float:
    return d / 360 * 2 * math.pi


class AugmentationSettings:
    """Rotation range, dummy-2D and mirror axes for a patch (nnU-Net's rules), and the enlarged patch."""

    def __init__(self, patch_size):
        self.patch_size = [int(p) for p in patch_size]
        dim = len(self.patch_size)
        self.dummy_2d = dim == 3 and max(self.patch_size) / self.patch_size[0] > ANISOTROPY_THRESHOLD
        if dim == 2:
            aspect = max(self.patch_size) / min(self.patch_size)
            self.rotation = (-degrees(15), degrees(15)) if aspect > 1.5 else (-degrees(180), degrees(180))
        else:
            self.rotation = (-degrees(180), degrees(180)) if self.dummy_2d else (-degrees(30), degrees(30))
        self.mirror_axes = tuple(range(dim))
        self.enlarged_patch = enlarged_patch_size(self.patch_size, self.rotation)
        if self.dummy_2d:
            self.enlarged_patch[0] = self.patch_size[0]


def enlarged_patch_size(patch_size, rotation) -> list[int]:
    """The patch to cut so that rotating by up to ``rotation`` (capped at 90 deg) around each axis and scaling
    down to 0.85 still fills the final patch."""
    angle = min(max(abs(r) for r in rotation), degrees(90))
    coords = np.array(patch_size, dtype=np.float64)
    final = coords.copy()
    for axis in range(len(coords)) if len(coords) == 3 else [None]:
        rotated = coords.reshape(1, -1) @ axis_rotation(len(coords), axis, angle)
        final = np.maximum(final, np.abs(rotated[0]))
    return (final / min(ENLARGEMENT_SCALE_RANGE)).astype(int).tolist()


def axis_rotation(dim: int, axis: int | None, angle: float) -> np.ndarray:
    """The rotation by ``angle`` in 3D about ``axis``, in 2D (``axis`` None) in the plane, with batchgenerators'
    sign conventions: the matrix it rotates a row vector of coordinates with (so that the enlarged patch is
    nnU-Net's, axis by axis), and the factors of batchgeneratorsv2's affine (``device_augment.rotation_matrix``).
    Written here rather than imported: batchgenerators' module of them imports pandas, SciPy and scikit-image,
    0.7 s at the start of every training job."""
    c, s = math.cos(angle), math.sin(angle)
    if dim == 2:
        return np.array([[c, -s], [s, c]])
    planes = {
        0: [[1, 0, 0], [0, c, -s], [0, s, c]],
        1: [[c, 0, s], [0, 1, 0], [-s, 0, c]],
        2: [[c, -s, 0], [s, c, 0], [0, 0, 1]],
    }
    return np.array(planes[axis], dtype=np.float64)


def spatial_transforms(settings: AugmentationSettings) -> list:
    # Imported here: it imports pandas and SciPy, which a training that augments on its device never needs.
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    patch = settings.patch_size[1:] if settings.dummy_2d else settings.patch_size
    spatial = SpatialTransform(
        patch,
        patch_center_dist_from_border=0,
        random_crop=False,
        p_elastic_deform=0,
        p_rotation=0.2,
        rotation=settings.rotation,
        p_scaling=0.2,
        scaling=SCALE_RANGE,
        p_synchronize_scaling_across_axes=1,
        bg_style_seg_sampling=False,
        border_mode_seg="constant",
        padding_value_seg=-1,
    )
    if settings.dummy_2d:
        return [Convert3DTo2DTransform(), spatial, Convert2DTo3DTransform()]
    return [spatial]


def intensity_transforms(settings: AugmentationSettings) -> list:
    return [
        RandomTransform(
            GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1, synchronize_channels=True),
            apply_probability=0.1,
        ),
        RandomTransform(
            GaussianBlurTransform(
                blur_sigma=(0.5, 1.0),
                synchronize_channels=False,
                synchronize_axes=False,
                p_per_channel=0.5,
                benchmark=True,
            ),
            apply_probability=0.2,
        ),
        RandomTransform(
            MultiplicativeBrightnessTransform(
                multiplier_range=BGContrast((0.75, 1.25)), synchronize_channels=False, p_per_channel=1
            ),
            apply_probability=0.15,
        ),
        RandomTransform(
            ContrastTransform(
                contrast_range=BGContrast((0.75, 1.25)),
                preserve_range=True,
                synchronize_channels=False,
                p_per_channel=1,
            ),
            apply_probability=0.15,
        ),
        RandomTransform(
            SimulateLowResolutionTransform(
                scale=(0.5, 1),
                synchronize_channels=False,
                synchronize_axes=True,
                ignore_axes=(0,) if settings.dummy_2d else None,
                allowed_channels=None,
                p_per_channel=0.5,
            ),
            apply_probability=0.25,
        ),
        gamma(inverted=True, probability=0.1),
        gamma(inverted=False, probability=0.3),
    ]


def gamma(inverted: bool, probability: float):
    """Gamma U(0.7, 1.5) (half the time below 1) per channel, mean and spread kept; on the inverted image."""
    transform = GammaTransform(
        gamma=BGContrast((0.7, 1.5)),
        p_invert_image=int(inverted),
        synchronize_channels=False,
        p_per_channel=1,
        p_retain_stats=1,
    )
    return RandomTransform(transform, apply_probability=probability)


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
    """nnU-Net's training augmentation of one sample {'image': C x ..., 'segmentation': S x ...}."""
    transforms = spatial_transforms(settings) + intensity_transforms(settings)
    transforms.append(MirrorTransform(allowed_axes=settings.mirror_axes))
    if masked_channels:
        transforms.append(
            MaskImageTransform(apply_to_channels=list(masked_channels), channel_idx_in_seg=0, set_outside_to=0)
        )
    transforms.append(RemoveLabelTansform(-1, 0))
    if previous_stage_labels:
        transforms += cascade_transforms(previous_stage_labels, degrade=True)
    return ComposeTransforms(transforms)


def validation_pipeline(previous_stage_labels=None):
    """What validation batches get: label -1 becomes 0, and the cascade's one-hot channels."""
    transforms = [RemoveLabelTansform(-1, 0)]
    if previous_stage_labels:
        transforms += cascade_transforms(previous_stage_labels, degrade=False)
    return ComposeTransforms(transforms)
