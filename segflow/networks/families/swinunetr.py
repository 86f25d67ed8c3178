"""MONAI's SwinUNETR as nnU-Net Revisited trained it inside nnU-Net: a Swin transformer encoder and a
convolutional decoder, feature size 48, no deep supervision (``segflow.networks.monai_networks`` builds it)."""

from __future__ import annotations

import math

from segflow.networks.family import ACTIVATION_COPIES, Family, Recipe, arch_kwargs
from segflow.networks.sizes import affine_norm, conv

WINDOW = 7
MLP_RATIO = 4
PATCH = 2  # the patch embedding's stride; four patch mergings follow it
DOWNSAMPLINGS = 5
#: Float32 values training keeps per voxel of the input as the network pads it, per sample, at feature size 48
#: (they scale with it), measured with one forward and backward pass (torch 2.13 on a CPU): 1 885-1 984 in 3D,
#: 2 230-2 496 in 2D.
PADDED_VOXEL_VALUES = {3: 2000, 2: 2500}
MEASURED_FEATURE_SIZE = 48


def swinunetr_parameters(kwargs: dict, in_channels: int, num_classes: int) -> int:
    """MONAI's SwinUNETR: a Swin transformer (patch embedding, windowed attention blocks, patch merging) and a
    convolutional U-Net decoder of residual blocks with non-affine instance norms."""
    size, dim = kwargs["feature_size"], kwargs["spatial_dims"]
    k3, k2, k1 = [3] * dim, [2] * dim, [1] * dim
    count = conv(in_channels, size, k2)  # patch embedding
    for stage, (depth, heads) in enumerate(zip(kwargs["depths"], kwargs["num_heads"], strict=True)):
        width = size * 2**stage
        attention = (2 * WINDOW - 1) ** dim * heads + 4 * width * width + 4 * width
        mlp = 2 * MLP_RATIO * width * width + (MLP_RATIO + 1) * width
        count += depth * (2 * affine_norm(width) + attention + mlp)
        count += affine_norm(2**dim * width) + 2**dim * width * 2 * width  # patch merging

    def residual_block(in_width, width):
        projection = conv(in_width, width, k1, bias=False) if in_width != width else 0
        return conv(in_width, width, k3, bias=False) + conv(width, width, k3, bias=False) + projection

    count += residual_block(in_channels, size)
    count += sum(residual_block(size * m, size * m) for m in (1, 2, 4, 16))
    for m in (8, 4, 2, 1):  # decoders 5, 4, 3, 2
        count += conv(2 * size * m, size * m, k2, bias=False) + residual_block(2 * size * m, size * m)
    count += conv(size, size, k2, bias=False) + residual_block(2 * size, size)  # decoder 1
    return count + conv(size, num_classes, k1)


class SwinUNETR(Family):
    name = "swinunetr"
    classes = ("SwinUNETR",)
    # nnU-Net Revisited (Isensee et al. 2024) trained SwinUNETR inside nnU-Net with its data pipeline, deep
    # supervision off. Its authors' nnU-Net baseline trainer for it (MIC-DKFZ/MedNeXt,
    # nnUNetTrainerV2_SwinUNETR_128x128x128): AdamW, lr 1e-4, nnU-Net's weight decay 3e-5 and poly schedule,
    # eps 1e-4 (1e-8 gives NaNs in fp16), feature size 48.
    recipe = Recipe(
        "adamw", 1e-4, 3e-5, "poly", eps=1e-4, source="MIC-DKFZ/MedNeXt nnUNetTrainerV2_SwinUNETR_128x128x128"
    )
    description = "MONAI SwinUNETR, feature size 48"

    def architecture(self, configuration: dict) -> dict:
        return {
            "network_class_name": "monai.networks.nets.SwinUNETR",
            "arch_kwargs": {
                "feature_size": 48,
                "depths": [2, 2, 2, 2],
                "num_heads": [3, 6, 12, 24],
                "norm_name": "instance",
                "spatial_dims": len(configuration["patch_size"]),
            },
            "_kw_requires_import": [],
        }

    def parameters(self, configuration: dict, in_channels: int, num_classes: int) -> int:
        return swinunetr_parameters(arch_kwargs(configuration), in_channels, num_classes)

    def activations(self, configuration: dict, num_classes: int) -> int:
        patch, feature_size = configuration["patch_size"], arch_kwargs(configuration)["feature_size"]
        per_voxel = PADDED_VOXEL_VALUES[len(patch)] * feature_size / MEASURED_FEATURE_SIZE
        return int(per_voxel * math.prod(self.padded_patch(configuration)) / ACTIVATION_COPIES)

    def padded_patch(self, configuration: dict) -> list[int]:
        """MONAI's SwinUNETR takes multiples of 32 per axis; segflow's pads a patch with zeros up to them."""
        divisor = PATCH**DOWNSAMPLINGS
        return [math.ceil(p / divisor) * divisor for p in configuration["patch_size"]]

    def build(self, configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True):
        from segflow.networks.monai_networks import build_swinunetr

        return build_swinunetr(configuration, in_channels, num_classes, deep_supervision)


FAMILY = SwinUNETR()
