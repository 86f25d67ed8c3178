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
    if force_separate_z is None:
        axis = separate_z_axis(current_spacing, new_spacing)
    elif force_separate_z:
        axes = coarse_axes(current_spacing)
        axis = axes[0] if len(axes) == 1 else None
    else:
        axis = None
    resampled = np.empty((len(data), *new_shape), dtype=data.dtype)
    for c, channel in enumerate(data):  # one channel at a time, each written into the result
        _resample_channel(channel, new_shape, is_seg, order, order_z, axis, resampled[c])
    return resampled
