"""What the nnunetv2 fixture script and the parity tests share: the inputs both feed to their augmentation
and sampling, and a JSON description of a batchgeneratorsv2 pipeline. Imports neither segflow nor nnunetv2."""

from __future__ import annotations

import math

import numpy as np
import torch

# Augmentation pipelines compared: name -> patch size, use_mask_for_norm per channel, cascade labels, and
# whether augmented samples are recorded (small patches only, to keep the fixture small).
PIPELINES = {
    "3d": {"patch": [40, 56, 40], "mask": [False], "cascade": None, "samples": False},
    "3d_masked_cascade": {"patch": [16, 20, 16], "mask": [True, False], "cascade": [1, 2], "samples": True},
    "dummy_2d": {"patch": [4, 24, 24], "mask": [False, False], "cascade": None, "samples": True},
    "2d": {"patch": [24, 20], "mask": [False, False], "cascade": None, "samples": True},
    "2d_elongated": {"patch": [32, 80], "mask": [False], "cascade": None, "samples": False},
}
SAMPLE_SEEDS = range(5)

# Sampling with an ignore label: labels, patch sizes (3D and 2D), batch size and number of patches.
IGNORE_LABELS = {"background": 0, "outer": 1, "inner": 2, "ignore": 3}
# Sampling without one (the case of most datasets): the same patch sizes, batch size and seed.
PLAIN_LABELS = {"background": 0, "block": 1, "bar": 2}
SAMPLING = {"3d": [8, 24, 24], "2d": [24, 24]}
SAMPLING_BATCH_SIZE = 5
SAMPLING_PATCHES = 10_000
SAMPLING_SEED = 7


def describe(value):
    """A transform (and everything it holds) as JSON: class names and public attributes, recursively."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if callable(value) and not hasattr(value, "__dict__") or isinstance(value, type(math.floor)):
        return f"<function {getattr(value, '__name__', type(value).__name__)}>"
    if hasattr(value, "__dict__"):
        public = {k: describe(v) for k, v in sorted(vars(value).items()) if not k.startswith("_")}
        return {"class": type(value).__name__, **public}
    return repr(value)


def augmentation_input(channels: int, shape, cascade: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic sample: a noisy image inside a body (zero outside), a label map with two nested
    labels and -1 outside the body, and for the cascade a shifted copy as the previous stage's map."""
    rng = np.random.RandomState(0)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = sum(g**2 for g in grid)
    seg = np.zeros(shape, np.int16)
    seg[radius < 0.5] = 1
    seg[radius < 0.15] = 2
    seg[radius > 1.6] = -1
    image = np.stack([np.where(seg >= 0, 1 + seg + rng.normal(0, 0.3, shape), 0) for _ in range(channels)])
    segs = [seg]
    if cascade:
        segs.append(np.roll(np.where(seg < 0, 0, seg), 2, axis=-1))
    return torch.from_numpy(image.astype(np.float32)), torch.from_numpy(np.stack(segs).astype(np.int16))


def ignore_label_map() -> np.ndarray:
    """1 x 16 x 64 x 64: -1 outside a body, the ignore label over most of it, and annotated scribbles of
    background and both labels (label 2 only in a few slices)."""
    shape = (16, 64, 64)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    seg = np.full(shape, 3, np.int8)
    seg[((y - 32) ** 2 + (x - 32) ** 2) > 30**2] = -1
    seg[:, 20:24, 10:54] = 0
    seg[:, 30:40, 28:36] = 1
    seg[4:7, 44:48, 30:34] = 2
    seg[:, 5:8, 30:34] = 0
    return seg[None]


def labelled_map() -> np.ndarray:
    """1 x 14 x 40 x 36, no ignore label: background, a small block of label 1 and a thin bar of label 2, the
    foreground well inside, so that forced patches start at a few corners."""
    seg = np.zeros((14, 40, 36), np.int8)
    seg[5:8, 10:14, 20:23] = 1
    seg[9, 25:32, 6] = 2
    return seg[None]


def coordinate_image(shape) -> np.ndarray:
    """3 x shape: each voxel's z, y and x index plus one, so that a cut patch tells where it was cut (0 is the
    padding outside the image)."""
    return np.stack(np.meshgrid(*[np.arange(1, n + 1) for n in shape], indexing="ij")).astype(np.float32)


def corner_counts(batches, batch_size: int) -> dict:
    """How often each lower corner (per axis) was cut, from patches of ``coordinate_image``, forced-foreground
    and other samples apart: {kind: {axis: {corner: count}}}."""
    from collections import Counter

    counts = {kind: [Counter() for _ in range(3)] for kind in ("forced", "other")}
    first_forced = round(batch_size * (1 - 0.33))
    for data in batches:
        data = np.asarray(data)
        data = data if data.ndim == 5 else data[:, :, None]  # 2D: the depth-1 axis back
        for j in range(data.shape[0]):
            kind = "forced" if j >= first_forced else "other"
            for axis in range(3):
                inside = np.argwhere(data[j, axis] > 0)[0]  # a voxel inside the image: its index there, minus
                counts[kind][axis][str(int(data[j, axis][tuple(inside)]) - 1 - int(inside[axis]))] += 1
    return {
        k: {str(a): dict(sorted(c.items(), key=lambda i: int(i[0]))) for a, c in enumerate(v)}
        for k, v in counts.items()
    }


def centre_label_counts(batches, patch, batch_size: int) -> dict:
    """Label at the centre of each cut patch, counted separately for forced-foreground and other samples."""
    from collections import Counter

    counts = {"forced": Counter(), "other": Counter()}
    first_forced = round(batch_size * (1 - 0.33))
    centre = tuple(p // 2 for p in patch)
    for seg in batches:
        for j in range(seg.shape[0]):
            label = int(seg[j][0][centre])
            counts["forced" if j >= first_forced else "other"][str(label)] += 1
    return {k: dict(sorted(v.items())) for k, v in counts.items()}
