"""Resampling of images, label maps and probabilities (method reference §4.3).

Images use cubic splines (order 3), label maps a per-label linear interpolation (order 1: each label's
indicator is interpolated and the best-scoring label wins, see ``resize_labels``), probabilities linear
interpolation. On anisotropic data (ratio of coarsest to finest spacing > 3, in the source or the
target, with a unique coarse axis) the coarse axis is handled separately: every slice is resized in-plane
with the given order, then the slices are resampled along the coarse axis with ``order_z`` (0 = nearest
on a half-pixel-centred grid). Resizes use scipy's spline ``zoom`` on a half-pixel grid with edge
replication, clipped to the input range: the definition skimage's ``resize(mode="edge",
anti_aliasing=False)`` uses and nnU-Net relies on.
"""

from __future__ import annotations

import math

import numpy as np

ANISOTROPY_THRESHOLD = 3.0


def coarse_axes(spacing) -> list[int]:
    spacing = np.asarray(spacing, dtype=np.float64)
    return [int(a) for a in np.flatnonzero(spacing.max() / spacing == 1)]


def separate_z_axis(current_spacing, new_spacing, threshold: float = ANISOTROPY_THRESHOLD) -> int | None:
    """The axis to resample on its own, or None: from the source spacing if it is anisotropic, else from
    the target spacing; none when the coarsest spacing is shared by several axes."""
    for spacing in (current_spacing, new_spacing):
        if max(spacing) / min(spacing) > threshold:
            axes = coarse_axes(spacing)
            return axes[0] if len(axes) == 1 else None
    return None


def resampling_axis(current_spacing, new_spacing, force_separate_z: bool | None) -> int | None:
    """The axis resampled on its own (``order_z``), or None: ``separate_z_axis``'s unless forced either way."""
    if force_separate_z is None:
        return separate_z_axis(current_spacing, new_spacing)
    if force_separate_z:
        axes = coarse_axes(current_spacing)
        return axes[0] if len(axes) == 1 else None
    return None


def resize(image: np.ndarray, new_shape, order: int, out: np.ndarray | None = None) -> np.ndarray:
    """Spline resize on a half-pixel grid with edge replication, clipped to the input's range; into ``out`` if
    given (its dtype: ndimage interpolates in double precision whatever the input's)."""
    new_shape = tuple(int(s) for s in new_shape)
    if image.shape == new_shape:
        if out is None:
            return image.copy()
        out[...] = image
        return out
    from scipy import ndimage  # imported here: jobs that never resample skip its import cost

    factors = [n / o for n, o in zip(new_shape, image.shape, strict=True)]
    out = ndimage.zoom(image, factors, output=out, order=order, mode="nearest", grid_mode=True)
    if order > 0:
        np.clip(out, image.min(), image.max(), out=out)
    return out


def resize_nearest(image: np.ndarray, new_shape) -> np.ndarray:
    """Order-0 resize (``resize(image, new_shape, 0)``, whatever the dtype) by indexing: no float copy."""
    return image[np.ix_(*[nearest_indices(o, int(n)) for o, n in zip(image.shape, new_shape, strict=True)])]


def label_score(seg: np.ndarray, label, new_shape, order: int) -> np.ndarray:
    """A label's indicator interpolated to ``new_shape`` (float64, in [0, 1]); the indicator goes in as uint8,
    which ndimage interpolates in double precision as it would a float64 copy."""
    indicator = (seg == label).view(np.uint8)  # both values occur: resize clips the score to [0, 1]
    return resize(indicator, new_shape, order, out=np.empty(new_shape, dtype=np.float64))


def resize_labels(seg: np.ndarray, new_shape, order: int) -> np.ndarray:
    """Resize a label map. Order 0 is nearest neighbour. Otherwise every label's indicator is interpolated
    and each voxel takes the label with the highest score; exact ties go to the nearest-neighbour label
    when it is among the tied ones, else to the smallest tied label. These are the semantics of
    batchgenerators >= 0.25.5, which nnunetv2 2.8.1 resamples label maps with. Two float64 arrays of the new
    shape are held at once (the best score so far and the current label's): whether the nearest label ties
    with the best is tracked as a boolean as the labels come."""
    new_shape = tuple(int(s) for s in new_shape)
    nearest = resize_nearest(seg, new_shape)
    labels = np.unique(seg)
    if order == 0 or len(labels) < 2:
        return nearest
    winner = np.full(new_shape, labels[0], dtype=seg.dtype)
    nearest_ties = np.zeros(new_shape, dtype=bool)  # the nearest label's score is > 0 and equals the best so far
    best = None
    for label in labels:
        score = label_score(seg, label, new_shape, order)
        if best is None:
            best = score
        else:
            better = score > best
            winner[better] = label
            nearest_ties[better] = False  # a higher score than the nearest label's, whether it came or is to come
            del better
            np.maximum(best, score, out=best)
        is_nearest = nearest == label
        nearest_ties[is_nearest] = ((score == best) & (score > 0))[is_nearest]
        del score, is_nearest
    winner[nearest_ties] = nearest[nearest_ties]
    return winner


def nearest_indices(old_size: int, new_size: int) -> np.ndarray:
    """Source index of each target index for order-0 resampling on a half-pixel-centred grid."""
    coords = old_size / new_size * (np.arange(new_size) + 0.5) - 0.5
    # ndimage's order-0 interpolation rounds half away from zero at .5 and clamps ("nearest" mode).
    return np.clip(np.floor(coords + 0.5).astype(np.int64), 0, old_size - 1)


def _resample_along_axis(volume: np.ndarray, axis: int, new_size: int, order: int, is_seg: bool) -> np.ndarray:
    old_size = volume.shape[axis]
    if old_size == new_size:
        return volume
    if order == 0:
        return np.take(volume, nearest_indices(old_size, new_size), axis=axis)
    from scipy import ndimage

    coords = np.meshgrid(
        *[
            (old_size / new_size * (np.arange(new_size) + 0.5) - 0.5) if a == axis else np.arange(n, dtype=np.float64)
            for a, n in enumerate(volume.shape)
        ],
        indexing="ij",
    )
    if not is_seg:
        return ndimage.map_coordinates(volume, coords, order=order, mode="nearest").astype(volume.dtype)
    out = np.zeros(coords[0].shape, dtype=volume.dtype)
    for label in np.unique(volume):
        mask = ndimage.map_coordinates((volume == label).astype(np.float64), coords, order=order, mode="nearest")
        out[np.round(mask) > 0.5] = label
    return out


def _resample_channel(channel, new_shape, is_seg, order, order_z, axis, out) -> None:
    """Resample one channel into ``out``."""
    resize_fn = resize_labels if is_seg else resize
    if axis is None:
        if is_seg:
            out[...] = resize_labels(channel, new_shape, order)
        else:
            resize(channel, new_shape, order, out=out)
        return
    in_plane = [s for a, s in enumerate(new_shape) if a != axis]
    slices = [resize_fn(s, in_plane, order) for s in np.moveaxis(channel, axis, 0)]
    stacked = np.stack(slices, axis=axis)
    out[...] = _resample_along_axis(stacked, axis, int(new_shape[axis]), order_z, is_seg)


def resample(
    data: np.ndarray,
    new_shape,
    current_spacing,
    new_spacing,
    is_seg: bool = False,
    order: int = 3,
    order_z: int = 0,
    force_separate_z: bool | None = None,
) -> np.ndarray:
    """Resample a C x Z x Y x X array (images, a label map or probabilities) to ``new_shape``."""
    new_shape = [int(s) for s in new_shape]
    if list(data.shape[1:]) == new_shape:
        return data
    axis = resampling_axis(current_spacing, new_spacing, force_separate_z)
    resampled = np.empty((len(data), *new_shape), dtype=data.dtype)
    for c, channel in enumerate(data):  # one channel at a time, each written into the result
        _resample_channel(channel, new_shape, is_seg, order, order_z, axis, resampled[c])
    return resampled


# --- on the inference device ------------------------------------------------------------------------------
#
# Orders 0 and 1 are separable: the resize above is, axis after axis, nearest or linear interpolation on the
# half-pixel grid with the edges held, and an in-plane resize followed by one along the separate axis is the
# same product of one-axis steps. torch does those steps on the device the network ran on, with its threads,
# on a band of target rows at a time (memory bounded by the band), in float64 as ndimage does, so that the
# float32 result differs from scipy's by a unit in the last place at most; the cubic splines of images stay
# above.

DEVICE_ORDERS = (0, 1)
#: Target voxels times channels per band: 16 M float32 values (64 MB) keep the band's copies small beside a
#: large case's other arrays and its steps long enough for torch's threads.
BAND_VALUES = 1 << 24


def axis_orders(ndim: int, current_spacing, new_spacing, order: int, order_z: int, force_separate_z) -> list[int]:
    """Per spatial axis, the interpolation order ``resample`` gives it."""
    axis = resampling_axis(current_spacing, new_spacing, force_separate_z)
    return [order_z if a == axis else order for a in range(ndim)]


def source_positions(old_size: int, new_size: int, order: int):
    """Per target index along one axis: the source index below, the one above and the weight of the latter
    (float64, as ndimage computes coordinates), or for order 0 the nearest index and no weight."""
    if old_size == new_size or order == 0:
        nearest = nearest_indices(old_size, new_size)
        return nearest, nearest, None
    coords = np.clip(old_size / new_size * (np.arange(new_size) + 0.5) - 0.5, 0, old_size - 1)
    below = np.floor(coords).astype(np.int64)
    return below, np.minimum(below + 1, old_size - 1), coords - below


def interpolate_axis(tensor, axis: int, positions):
    """One axis of a tensor resampled to the target indices of ``positions`` (``source_positions``)."""
    import torch

    below, above, weight = positions
    if weight is None and len(below) == tensor.shape[axis] and (below == np.arange(len(below))).all():
        return tensor  # an axis whose size does not change
    # Indexing, not index_select: on a CPU the latter takes 30 times as long on an inner axis (torch 2.13).
    leading = (slice(None),) * axis
    lower = tensor[(*leading, torch.from_numpy(below).to(tensor.device))]
    if weight is None:
        return lower
    upper = tensor[(*leading, torch.from_numpy(above).to(tensor.device))]
    shape = [1] * tensor.ndim
    shape[axis] = -1
    return torch.lerp(lower, upper, torch.from_numpy(weight).to(tensor.device, tensor.dtype).view(shape))


def resampled_bands(data, new_shape, orders, device="cpu", band_values: int = BAND_VALUES):
    """``data`` (C x spatial, an array or a tensor on any device) resampled to ``new_shape`` with per-axis
    ``orders`` (0 or 1): yields (first row, float32 C x rows x ... band on ``device``) in order along the first
    spatial axis, each band ``band_values`` values at most (one row at least). Only the source rows a band
    needs are moved to the device."""
    import torch

    new_shape = [int(s) for s in new_shape]
    source = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.asarray(data))
    positions = [
        source_positions(old, new, order) for old, new, order in zip(source.shape[1:], new_shape, orders, strict=True)
    ]
    rows = max(1, band_values // max(len(source) * math.prod(new_shape[1:]), 1))
    below, above, weight = positions[0]
    for start in range(0, new_shape[0], rows):
        band = slice(start, min(start + rows, new_shape[0]))
        first, last = int(below[band].min()), int(above[band].max())
        # The band's source rows, then its first axis from them: indices relative to the first source row.
        needed = source[:, first : last + 1].to(device=device, dtype=torch.float64)
        relative = (below[band] - first, above[band] - first, None if weight is None else weight[band])
        resampled = interpolate_axis(needed, 1, relative)
        del needed
        yield start, in_plane(resampled, new_shape[1:], orders[1:], positions[1:]).float()


def in_plane(band, new_shape, orders, positions):
    """The axes after the first of a C x rows x ... band resampled: torch's bilinear interpolation (the same
    half-pixel grid and held edges, three times as fast on a CPU as indexing twice per axis) where both are
    linear, else axis by axis."""
    import torch

    if list(orders) == [1, 1]:
        return torch.nn.functional.interpolate(band, size=list(new_shape), mode="bilinear", align_corners=False)
    for axis, axis_positions in enumerate(positions, start=2):
        band = interpolate_axis(band, axis, axis_positions)
    return band
