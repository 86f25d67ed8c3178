"""Cropping to the non-zero region (method reference §2), per case.

The mask is the union over channels of ``value != 0`` with holes filled; the crop is its tight bounding
box (half-open, per axis). Inside the crop, label voxels that are background *and* outside the mask
become -1, which later stages read as "outside the image": z-score normalisation with a mask, padding,
and the loss all rely on it.

The crop stage stores what the fingerprint needs, per case:

* ``crop/{case}.json``: ``spacing``, ``shape_before_cropping``, ``bbox`` ([[start, end), ...]),
  ``shape_after_crop`` and ``relative_size`` (cropped voxels / original voxels);
* ``crop/{case}_fg.npy``: C x N float32, the intensities of every foreground voxel (label > 0) per channel.

Storing all foreground intensities instead of nnU-Net's fixed-size random sample keeps the crop of a case
independent of how many cases the dataset has; the fingerprint draws nnU-Net's sample from them.
"""

from __future__ import annotations

import numpy as np

from segflow.io import read_case, save_json, save_npy


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a binary mask: background not face-connected to the border becomes foreground.

    The same result as scipy.ndimage.binary_fill_holes with its default structure; SimpleITK's filter is
    used because every job imports SimpleITK anyway, while importing scipy.ndimage costs a quarter of a
    second per job (DESIGN.md, "Per-case jobs").
    """
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    filled = sitk.BinaryFillhole(image, fullyConnected=False, foregroundValue=1)
    return sitk.GetArrayViewFromImage(filled).astype(bool)


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Union of non-zero voxels over the channels of a C x Z x Y x X array, holes filled."""
    mask = data[0] != 0
    for channel in data[1:]:
        mask |= channel != 0
    return fill_holes(mask)


def bounding_box(mask: np.ndarray) -> list[list[int]]:
    """Half-open bounding box [[start, end), ...] of the True voxels; the whole array if there are none."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append([int(hits[0]), int(hits[-1]) + 1] if hits.size else [0, mask.shape[axis]])
    return box


def slicer(box) -> tuple[slice, ...]:
    return tuple(slice(start, end) for start, end in box)


def crop_to_nonzero(data: np.ndarray, seg: np.ndarray | None = None):
    """Crop C x Z x Y x X data (and its 1 x Z x Y x X seg) to the non-zero box.

    Returns (data, seg, bbox); the seg is -1 where it is background outside the mask. Without a seg, the
    returned seg is 0 inside the mask and -1 outside, as nnU-Net does for images to predict.
    """
    mask = nonzero_mask(data)
    box = bounding_box(mask)
    region = slicer(box)
    data = data[(slice(None), *region)]
    mask = mask[region]
    if seg is None:
        seg = (mask.view(np.int8) - 1)[None]  # int8 throughout: an image to predict can be a 1 GB CT
    else:
        seg = seg[(slice(None), *region)].copy()
        seg[(seg == 0) & ~mask[None]] = -1
    return data, seg, box


def crop_case(case: str, image_files, label_file, out_json, out_foreground) -> None:
    images = read_case(image_files, label_file, case)
    shape_before = list(images.data.shape[1:])
    data, seg, box = crop_to_nonzero(images.data, images.seg.astype(np.int16))
    foreground = seg[0] > 0
    save_npy(np.stack([channel[foreground] for channel in data]).astype(np.float32), out_foreground)
    save_json(
        {
            "case": case,
            "spacing": images.spacing,
            "shape_before_cropping": shape_before,
            "bbox": box,
            "shape_after_crop": list(data.shape[1:]),
            "relative_size": float(np.prod(data.shape[1:]) / np.prod(shape_before)),
        },
        out_json,
    )


def crop_batch(cases, image_files, label_files, out_json, out_foreground) -> None:
    for i, case in enumerate(cases):
        crop_case(case, image_files[i], label_files[i], out_json[i], out_foreground[i])
