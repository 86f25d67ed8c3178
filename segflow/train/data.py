"""Training batches: patch sampling with foreground oversampling and nnU-Net's augmentation (§5.5, §5.6).

Sampling: cases are drawn uniformly with replacement; sample j of a batch is forced to contain foreground
when ``j >= round(batch_size * (1 - 0.33))``: a class present in the case is chosen uniformly, one of its
stored voxels (``class_locations``) becomes the patch centre. Otherwise the patch corner is uniform over
the allowed range, which reaches half the padding beyond the image. The loader cuts the *enlarged* patch
(large enough that rotation and scaling leave no empty corners); the spatial transform cuts the final
patch from it. Outside the image the image is 0 and the label -1. 2D configurations cut one slice.

Augmentation, per sample, with batchgenerators' transforms and nnU-Net's probabilities (those of nnU-Net
v2.5+, which resamples the image linearly and the label map per label, linearly, by argmax; the spatial
step resamples with torch, see ``spatial.py``): rotation (p 0.2;
3D +-30 deg per axis; 2D and "dummy 2D" for anisotropic 3D patches +-180 deg in-plane, or +-15 deg for 2D
patches with aspect > 1.5), scaling (p 0.2, 0.7-1.4), Gaussian noise (0.1), Gaussian blur (0.2), brightness
(0.15), contrast (0.15), simulated low resolution (0.25), gamma on the inverted image (0.1), gamma (0.3),
mirroring along every axis (p 0.5 each). Then channels normalised inside the mask are zeroed outside it, the
label -1 becomes 0, and the deep-supervision target pyramid is built.

All randomness is numpy's global generator (and Python's, seeded from it), which batchgenerators' workers
seed from the seeds we pass;
the trainer derives them from (seed, fold, epoch, worker), so an epoch's batches do not depend on whether
training was interrupted before it.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from batchgenerators.augmentations.utils import rotate_coords_2d, rotate_coords_3d
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform
from batchgenerators.transforms.utility_transforms import RemoveLabelTransform

from segflow.io import load_json, load_npy
from segflow.train.cascade import MoveSegAsOneHotToData, cascade_training_transforms
from segflow.train.spatial import TorchSpatialTransform

OVERSAMPLE_FOREGROUND = 0.33
ANISOTROPY_THRESHOLD = 3
SCALE_RANGE = (0.7, 1.4)
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
    if len(coords) == 3:
        for rotated in (
            rotate_coords_3d(coords, angle, 0, 0),
            rotate_coords_3d(coords, 0, angle, 0),
            rotate_coords_3d(coords, 0, 0, angle),
        ):
            final = np.maximum(final, np.abs(rotated))
    else:
        final = np.maximum(final, np.abs(rotate_coords_2d(coords, angle)))
    return (final / min(ENLARGEMENT_SCALE_RANGE)).astype(int).tolist()


def forced_foreground(sample_index: int, batch_size: int, fraction: float = OVERSAMPLE_FOREGROUND) -> bool:
    return sample_index >= round(batch_size * (1 - fraction))


class Case:
    """A preprocessed case, memory-mapped: C x Z x Y x X data, 1 x Z x Y x X seg, class locations, and for
    the cascade the previous stage's 1 x Z x Y x X segmentation."""

    def __init__(self, folder, case: str, previous_stage=None):
        folder = Path(folder)
        self.data = load_npy(folder / f"{case}.npy", mmap=True)
        self.seg = load_npy(folder / f"{case}_seg.npy", mmap=True)
        self.seg_prev = None if previous_stage is None else load_npy(previous_stage, mmap=True)
        self.class_locations = {
            k: np.asarray(v, dtype=np.int64).reshape(-1, 3)
            for k, v in load_json(folder / f"{case}.json")["class_locations"].items()
        }


class PatchLoader(SlimDataLoaderBase):
    """Infinite batches of (enlarged) patches, with nnU-Net's foreground oversampling."""

    def __init__(self, cases: list[Case], batch_size: int, patch_size, final_patch_size, is_2d: bool):
        super().__init__(cases, batch_size, None)
        self.patch_size = [int(p) for p in patch_size]
        self.final_patch_size = [int(p) for p in final_patch_size]
        self.is_2d = is_2d

    def bounding_box(self, shape, centre=None):
        """Lower and upper corners of a patch in an image of ``shape``; centred on ``centre`` if given."""
        dim = len(shape)
        need = [max(p - f, p - s) for p, f, s in zip(self.patch_size, self.final_patch_size, shape, strict=True)]
        lower = [-(n // 2) for n in need]
        upper = [shape[d] + need[d] // 2 + need[d] % 2 - self.patch_size[d] for d in range(dim)]
        if centre is None:
            lbs = [np.random.randint(lower[d], upper[d] + 1) for d in range(dim)]
        else:
            lbs = [max(lower[d], int(centre[d]) - self.patch_size[d] // 2) for d in range(dim)]
        return lbs, [lb + p for lb, p in zip(lbs, self.patch_size, strict=True)]

    def foreground_centre(self, case: Case):
        """(slice, centre) for a forced-foreground patch: a class present in the case chosen uniformly, then
        one of its stored voxels (2D: a slice holding the class, then a voxel in it); (None, None) if the
        case has no foreground."""
        eligible = [k for k, v in case.class_locations.items() if len(v)]
        if not eligible:
            return None, None
        voxels = case.class_locations[eligible[np.random.choice(len(eligible))]]
        if not self.is_2d:
            return None, voxels[np.random.choice(len(voxels))]
        z = np.random.choice(np.unique(voxels[:, 0]))
        in_slice = voxels[voxels[:, 0] == z][:, 1:]
        return int(z), in_slice[np.random.choice(len(in_slice))]

    @staticmethod
    def crop(array: np.ndarray, lbs, ubs, fill) -> np.ndarray:
        """Cut [lbs, ubs) from C x ... ``array``, ``fill`` where the box leaves the image (one copy)."""
        shape = array.shape[1:]
        out = np.full((array.shape[0], *[hi - lo for lo, hi in zip(lbs, ubs, strict=True)]), fill, dtype=array.dtype)
        source = tuple(slice(max(0, lo), min(s, hi)) for lo, hi, s in zip(lbs, ubs, shape, strict=True))
        target = tuple(slice(src.start - lo, src.stop - lo) for src, lo in zip(source, lbs, strict=True))
        if all(t.stop > t.start for t in target):
            out[(slice(None), *target)] = array[(slice(None), *source)]
        return out

    def sample(self, case: Case, force_fg: bool):
        """(data, seg) of one patch; the cascade's previous segmentation is a second seg channel."""
        data, seg = case.data, case.seg
        seg_prev = case.seg_prev
        z, centre = self.foreground_centre(case) if force_fg else (None, None)
        if self.is_2d:
            z = np.random.randint(data.shape[1]) if z is None else z
            data, seg = data[:, z], seg[:, z]
            seg_prev = None if seg_prev is None else seg_prev[:, z]
        lbs, ubs = self.bounding_box(data.shape[1:], centre)
        seg_patch = self.crop(seg, lbs, ubs, -1)
        if seg_prev is not None:
            seg_patch = np.concatenate([seg_patch, self.crop(seg_prev, lbs, ubs, -1).astype(seg_patch.dtype)])
        return self.crop(data, lbs, ubs, 0.0), seg_patch

    def generate_train_batch(self) -> dict:
        # batchgenerators' noise transform draws from Python's `random`, which its workers do not seed; derive
        # it from numpy's (seeded) generator for every batch, so batches depend only on the seeds.
        random.seed(int(np.random.randint(2**31)))
        picks = np.random.choice(len(self._data), self.batch_size, replace=True)
        samples = [self.sample(self._data[i], forced_foreground(j, self.batch_size)) for j, i in enumerate(picks)]
        return {
            "data": np.stack([s[0] for s in samples]).astype(np.float32, copy=False),
            "seg": np.stack([s[1] for s in samples]).astype(np.int16, copy=False),
        }


class FoldChannelsTransform(AbstractTransform):
    """Dummy 2D: fold the first spatial axis into the channels (b, c, z, y, x) -> (b, c*z, y, x), or back."""

    def __init__(self, unfold: bool = False):
        self.unfold = unfold

    def __call__(self, **batch):
        for key in ("data", "seg"):
            array = batch[key]
            if self.unfold:
                b, _, y, x = array.shape
                channels, z = batch[f"_{key}_shape"]
                batch[key] = array.reshape(b, channels, z, y, x)
            else:
                b, c, z, y, x = array.shape
                batch[f"_{key}_shape"] = (c, z)
                batch[key] = array.reshape(b, c * z, y, x)
        return batch


class MaskOutsideTransform(AbstractTransform):
    """Zero the channels that were normalised inside the non-zero mask where the label says "outside" (-1)."""

    def __init__(self, channels):
        self.channels = list(channels)

    def __call__(self, **batch):
        outside = batch["seg"][:, 0] < 0
        for c in self.channels:
            batch["data"][:, c][outside] = 0
        return batch


class ToTensorTransform(AbstractTransform):
    """Batches leave the augmentation workers as torch tensors: torch passes them between processes in shared
    memory, where numpy arrays would be pickled through a pipe (the bottleneck of a GPU fed 128^3 patches)."""

    def __call__(self, **batch):
        import torch

        batch["data"] = torch.from_numpy(np.ascontiguousarray(batch["data"], dtype=np.float32))
        batch["seg"] = torch.from_numpy(np.ascontiguousarray(batch["seg"]).astype(np.int16, copy=False))
        return batch


def training_transforms(settings: AugmentationSettings, masked_channels, previous_stage_labels=None) -> Compose:
    """nnU-Net's augmentation; with ``previous_stage_labels`` (the cascade) also the previous segmentation's
    one-hot channels and their random degradation."""
    spatial_patch = settings.patch_size[1:] if settings.dummy_2d else settings.patch_size
    ignore_axes = (0,) if settings.dummy_2d else None
    rotation = settings.rotation
    transforms = []
    if settings.dummy_2d:
        transforms.append(FoldChannelsTransform())
    transforms.append(
        TorchSpatialTransform(spatial_patch, rotation, SCALE_RANGE, p_rot=0.2, p_scale=0.2, border_cval_seg=-1)
    )
    if settings.dummy_2d:
        transforms.append(FoldChannelsTransform(unfold=True))
    transforms += [
        GaussianNoiseTransform(p_per_sample=0.1),
        GaussianBlurTransform((0.5, 1.0), different_sigma_per_channel=True, p_per_sample=0.2, p_per_channel=0.5),
        BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), p_per_sample=0.15),
        ContrastAugmentationTransform(p_per_sample=0.15),
        SimulateLowResolutionTransform(
            zoom_range=(0.5, 1),
            per_channel=True,
            p_per_channel=0.5,
            order_downsample=0,
            order_upsample=1,
            p_per_sample=0.25,
            ignore_axes=ignore_axes,
        ),
        GammaTransform((0.7, 1.5), invert_image=True, per_channel=True, retain_stats=True, p_per_sample=0.1),
        GammaTransform((0.7, 1.5), invert_image=False, per_channel=True, retain_stats=True, p_per_sample=0.3),
        MirrorTransform(settings.mirror_axes),
    ]
    if masked_channels:
        transforms.append(MaskOutsideTransform(masked_channels))
    transforms.append(RemoveLabelTransform(-1, 0))
    if previous_stage_labels:
        transforms += cascade_training_transforms(previous_stage_labels)
    return Compose([*transforms, ToTensorTransform()])


def validation_transforms(previous_stage_labels=None) -> Compose:
    transforms = [RemoveLabelTransform(-1, 0)]
    if previous_stage_labels:
        transforms.append(MoveSegAsOneHotToData(previous_stage_labels))
    return Compose([*transforms, ToTensorTransform()])
