"""nnU-Net's training augmentation (method reference §5.6) for a whole batch on the training device (issue 14).

The loader workers cut the enlarged patches and draw each sample's parameters (``draw``: numpy's generator,
seeded from (seed, fold, purpose, batch index)), with nnunetv2 2.8.1's probabilities and ranges; ``apply``
applies them to the whole batch in a few tensor operations (the functions of ``batched.py``, each equal to
batchgeneratorsv2's transform given the same parameters): on a GPU in the training process, on a CPU in the
worker that cut the batch, on one thread beside the training step. In nnunetv2's order:

rotation and scaling (one resampling, per-sample matrices), Gaussian noise, Gaussian blur, brightness,
contrast, simulated low resolution, gamma on the inverted image, gamma, mirroring, masking outside the
non-zero mask, label -1 to 0.

Parameters travel with the batch as small numpy arrays, so a batch depends only on the worker's seed, never
on the device or the thread that augments it.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from segflow.train import batched
from segflow.train.augment import SCALE_RANGE, AugmentationSettings, axis_rotation, cascade_transforms

# (probability per sample, per channel) of nnunetv2 2.8.1's transforms; ranges as in augment.py
P_ROTATION, P_SCALING = 0.2, 0.2
P_NOISE, NOISE_SIGMA = 0.1, (0.0, 0.1)
P_BLUR, P_BLUR_CHANNEL, BLUR_SIGMA = 0.2, 0.5, (0.5, 1.0)
P_BRIGHTNESS, BRIGHTNESS = 0.15, (0.75, 1.25)
P_CONTRAST, CONTRAST = 0.15, (0.75, 1.25)
P_LOW_RES, P_LOW_RES_CHANNEL, LOW_RES_ZOOM = 0.25, 0.5, (0.5, 1.0)
P_GAMMA_INVERTED, P_GAMMA, GAMMA = 0.1, 0.3, (0.7, 1.5)
P_MIRROR = 0.5


def around_one(low: float, high: float) -> float:
    """batchgeneratorsv2's BGContrast draw: half the time below 1, U(low, 1), else U(1, high)."""
    if np.random.uniform() < 0.5 and low < 1:
        return np.random.uniform(low, 1)
    return np.random.uniform(max(low, 1), high)


def draw_factors(params: dict, name: str, probability: float, bounds, channels: int) -> None:
    """A transform applied to a sample with ``probability``, then to all its channels, each with its own
    factor around one (``around_one``); factor 1 where it is not applied."""
    applied = np.random.uniform() < probability
    params[f"{name}_applied"] = np.full(channels, applied)
    factors = [around_one(*bounds) if applied else 1.0 for _ in range(channels)]
    params[name] = np.array(factors, dtype=np.float32)


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


class BatchedAugmentation:
    """Draw (in a worker) and apply (on the training GPU, or in the worker on a CPU) nnU-Net's training
    augmentation of a batch."""

    def __init__(self, settings: AugmentationSettings, masked_channels=(), label_values=None):
        self.settings = settings
        self.masked_channels = list(masked_channels)
        # the values the label maps may hold (segflow.labels.label_values): resampling them need not ask the device
        self.label_values = label_values
        self.dims = len(settings.patch_size)  # of the image; the spatial transform's is 2 for dummy 2D
        self.spatial_dims = 2 if settings.dummy_2d else self.dims

    # --- in the worker: one sample's parameters at a time, nnunetv2's probabilities ----------------------

    def draw(self, batch_size: int, channels: int) -> dict[str, np.ndarray]:
        rows = [self.draw_sample(channels) for _ in range(batch_size)]
        params = {key: np.stack([r[key] for r in rows]) for key in rows[0]}
        params["noise_seed"] = np.array(np.random.randint(0, 2**31 - 1), dtype=np.int64)
        return params

    def draw_sample(self, channels: int) -> dict[str, np.ndarray]:
        p = {}
        rotate, scale = np.random.uniform() < P_ROTATION, np.random.uniform() < P_SCALING
        angles = [np.random.uniform(*self.settings.rotation) if rotate else 0.0 for _ in range(self.spatial_dims)]
        factor = np.random.uniform(*SCALE_RANGE) if scale else 1.0
        p["spatial"] = np.array(rotate or scale)
        p["matrix"] = rotation_matrix(angles, factor).astype(np.float32)
        noise = np.random.uniform() < P_NOISE
        p["noise"] = np.full(channels, np.random.uniform(*NOISE_SIGMA) if noise else 0.0, dtype=np.float32)
        p["noise_applied"] = np.full(channels, noise)
        blur = np.random.uniform() < P_BLUR
        p["blur_applied"] = blur & (np.random.uniform(size=channels) < P_BLUR_CHANNEL)
        p["blur"] = np.random.uniform(*BLUR_SIGMA, size=(channels, self.dims)).astype(np.float32)
        draw_factors(p, "brightness", P_BRIGHTNESS, BRIGHTNESS, channels)
        draw_factors(p, "contrast", P_CONTRAST, CONTRAST, channels)
        low_res = np.random.uniform() < P_LOW_RES
        p["low_res_applied"] = low_res & (np.random.uniform(size=channels) < P_LOW_RES_CHANNEL)
        zoom = np.repeat(np.random.uniform(*LOW_RES_ZOOM, size=(channels, 1)), self.dims, axis=1)
        if self.settings.dummy_2d:
            zoom[:, 0] = 1
        p["low_res"] = zoom.astype(np.float32)
        draw_factors(p, "gamma_inverted", P_GAMMA_INVERTED, GAMMA, channels)
        draw_factors(p, "gamma", P_GAMMA, GAMMA, channels)
        p["mirror"] = np.random.uniform(size=self.dims) < P_MIRROR
        return p

    # --- on the device: the whole batch --------------------------------------------------------------

    def apply(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented patches of a batch from ``PatchLoader.cut_for_the_device`` whose tensors are on the
        device: final patches B x C x ... and B x S x ... (int16), the enlarged patches of the samples to
        rotate or scale, and the parameters."""
        p = {k: torch.as_tensor(v) for k, v in batch["augmentation"].items()}
        image, seg = batch["data"], batch["seg"]
        self.rotate_and_scale(image, seg, batch["moved_data"], batch["moved_seg"], p)
        generator = torch.Generator(image.device).manual_seed(int(p["noise_seed"]))
        batched.add_noise(image, p["noise"], p["noise_applied"], generator)
        batched.blur(image, p["blur"], p["blur_applied"])
        batched.multiply(image, p["brightness"], p["brightness_applied"])
        batched.contrast(image, p["contrast"], p["contrast_applied"], preserve_range=True)
        batched.simulate_low_resolution(image, p["low_res"], p["low_res_applied"])
        for name, inverted in (("gamma_inverted", True), ("gamma", False)):
            applied = p[f"{name}_applied"]
            batched.gamma(image, p[name], applied, torch.full_like(applied, inverted), torch.ones_like(applied))
        batched.mirror(image, p["mirror"])
        batched.mirror(seg, p["mirror"])
        batched.mask_outside(image, seg, self.masked_channels)
        seg.masked_fill_(seg == -1, 0)  # (boolean indexing would wait for the device to count the voxels)
        return image, seg

    def rotate_and_scale(self, image, seg, moved_image, moved_seg, p: dict) -> None:
        """Rows of the rotated or scaled samples replaced by their resampled enlarged patches."""
        moved = p["spatial"].nonzero().flatten()
        if not len(moved):
            return
        matrices, patch = p["matrix"][moved], self.settings.patch_size
        if self.settings.dummy_2d:  # the first axis folded into the channels, an in-plane transform per slice
            n, c, z = moved_image.shape[:3]
            flat_image, flat_seg = moved_image.flatten(1, 2), moved_seg.flatten(1, 2)
            flat_image, flat_seg = batched.resample(flat_image, flat_seg, matrices, patch[1:], labels=self.label_values)
            resampled = flat_image.view(n, c, z, *patch[1:]), flat_seg.view(n, seg.shape[1], z, *patch[1:])
        else:
            resampled = batched.resample(moved_image, moved_seg, matrices, patch, labels=self.label_values)
        rows = moved.to(image.device)
        image[rows], seg[rows] = resampled


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
