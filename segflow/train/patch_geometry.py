"""The geometry of a training patch's augmentation: rotation range, dummy 2D, mirror axes and the enlarged patch
the loader cuts (nnunetv2's ``configure_rotation_dummyDA_mirroring_and_inital_patch_size``, reimplemented in
``AugmentationSettings``), batchgeneratorsv2's rotation matrices, and where the final patch lies in the enlarged
one. No torch: the loader and the planner's arithmetic need none of it."""

from __future__ import annotations

import math

import numpy as np

ANISOTROPY_THRESHOLD = 3
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

    @property
    def spatial_dims(self) -> int:
        """The dimensions the spatial transform works in: 2 for dummy 2D (the first axis folded into the
        channels), else the patch's."""
        return 2 if self.dummy_2d else len(self.patch_size)


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
    nnU-Net's, axis by axis), and the factors of batchgeneratorsv2's affine (``rotation_matrix``).
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


def rotation_matrix(angles, scale: float) -> np.ndarray:
    """batchgeneratorsv2's affine: rotations about the axes (Rz Ry Rx in 3D, by the last angle in 2D) after a
    uniform scaling."""
    if len(angles) == 2:
        return axis_rotation(2, None, angles[-1]) * scale
    rx, ry, rz = (axis_rotation(3, axis, angle) for axis, angle in enumerate(angles))
    return rz @ ry @ rx * scale


def centre_window(enlarged, final) -> tuple[slice, ...]:
    """Where the final patch lies in the enlarged one when the sample is neither rotated nor scaled."""
    return tuple(slice(e // 2 - f // 2, e // 2 - f // 2 + f) for e, f in zip(enlarged, final, strict=True))
