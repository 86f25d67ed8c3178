"""MONAI's SegResNetDS as Auto3DSeg's segresnet algorithm configures it, the SegResNet of nnU-Net Revisited
(``segflow.networks.monai_networks`` builds it)."""

from __future__ import annotations

import math

import numpy as np

from segflow.networks.family import ACTIVATION_COPIES, Family, Recipe, arch_kwargs
from segflow.networks.sizes import affine_norm, conv

#: Values training keeps per value of the residual blocks' feature maps (``block_features``, which follows the
#: anisotropic levels), measured with one forward and backward pass (torch 2.13 on a CPU): 6.0-6.7 on inputs from
#: 20 x 160 x 128 to 64^3 and 256^2, 8.8-10 on tiny ones (14 x 48 x 48, 48^2), where fixed costs weigh more.
#: Without gradients, inference kept a third of either.
FEATURE_VALUES = 7.0


def segresnet_scales(resolution, levels: int, dim: int) -> list[list[int]]:
    """SegResNetDS's downsampling factor per level (MONAI's ``scales_for_resolution``): an axis whose spacing is
    finer than the coarsest by 2**n is not downsampled at the first n levels."""
    if resolution is None:
        return [[2] * dim] * levels
    finer = np.floor(np.log2(np.max(resolution) / np.asarray(resolution, dtype=float))).astype(int)
    coarsening = int(finer.max())
    scales = [[1 if 2**i >= 2**n else 2 for n in finer] for i in range(coarsening)]
    return (scales + [[2] * dim] * (levels - coarsening))[:levels]


def level_scales(configuration: dict) -> list[list[int]]:
    kwargs = arch_kwargs(configuration)
    return segresnet_scales(kwargs.get("resolution"), len(kwargs["blocks_down"]), len(configuration["patch_size"]))


def segresnet_parameters(kwargs: dict, in_channels: int, num_classes: int) -> int:
    """MONAI's SegResNetDS: pre-activation residual blocks (two bias-free convolutions, two affine norms), a
    strided convolution down per level, a transposed convolution and one block up, 1 x 1 heads at the
    ``dsdepth`` finest levels; kernels of 1 along axes a level does not downsample."""
    blocks, filters, dim = kwargs["blocks_down"], kwargs["init_filters"], kwargs["spatial_dims"]
    kernels = [
        [3 if s > 1 else 1 for s in scale] for scale in segresnet_scales(kwargs.get("resolution"), len(blocks), dim)
    ]

    def block(width, kernel):
        return 2 * (affine_norm(width) + conv(width, width, kernel, bias=False))

    count = conv(in_channels, filters, kernels[0], bias=False)
    for level, n in enumerate(blocks):
        width = filters * 2**level
        count += n * block(width, kernels[level])
        if level < len(blocks) - 1:
            count += conv(width, 2 * width, kernels[level], bias=False)
    ups = len(blocks) - 1
    for i in range(ups):
        width, kernel = filters * 2 ** (ups - 1 - i), kernels[ups - 1 - i]
        count += conv(2 * width, width, kernel, bias=False) + block(width, kernel)
        if ups - i <= kwargs.get("dsdepth", 1):
            count += conv(width, num_classes, [1] * dim)
    return count


class SegResNet(Family):
    name = "segresnet"
    classes = ("SegResNetDS",)
    # nnU-Net Revisited ran SegResNet as MONAI Auto3DSeg's segresnet algorithm; its template
    # (Project-MONAI/research-contributions auto3dseg/algorithm_templates/segresnet/configs/hyper_parameters.yaml):
    # AdamW, lr 2e-4, weight decay 1e-5, 3 warmup epochs of 300 then cosine, SegResNetDS as below. segflow keeps
    # nnU-Net's loss, sampling and augmentation for every network, so that only the network differs.
    recipe = Recipe(
        "adamw",
        2e-4,
        1e-5,
        "warmup_cosine",
        warmup_fraction=0.01,
        source="MONAI Auto3DSeg segresnet hyper_parameters.yaml",
    )
    description = "MONAI SegResNetDS (Auto3DSeg's segresnet)"

    def architecture(self, configuration: dict) -> dict:
        """SegResNetDS, 32 initial filters, blocks (1, 2, 2, 4, 4), instance norm, 4 deep-supervision heads,
        downsampling adapted to the configuration's spacing."""
        return {
            "network_class_name": "monai.networks.nets.SegResNetDS",
            "arch_kwargs": {
                "init_filters": 32,
                "blocks_down": [1, 2, 2, 4, 4],
                "norm": "INSTANCE",
                "dsdepth": 4,
                "resolution": [float(s) for s in configuration["spacing"]],
                "spatial_dims": len(configuration["patch_size"]),
            },
            "_kw_requires_import": [],
        }

    def parameters(self, configuration: dict, in_channels: int, num_classes: int) -> int:
        return segresnet_parameters(arch_kwargs(configuration), in_channels, num_classes)

    def activations(self, configuration: dict, num_classes: int) -> int:
        return int(FEATURE_VALUES * self.block_features(configuration) / ACTIVATION_COPIES)

    def padded_patch(self, configuration: dict) -> list[int]:
        """SegResNetDS takes multiples of the product of its levels' factors; segflow's pads a patch up to them."""
        patch, scales = configuration["patch_size"], level_scales(configuration)
        divisors = np.prod(np.array(scales[:-1]), axis=0).astype(int).tolist() if len(scales) > 1 else [1] * len(patch)
        return [math.ceil(p / d) * d for p, d in zip(patch, divisors, strict=True)]

    def block_features(self, configuration: dict) -> int:
        """The values of the feature maps the residual blocks work on, for one sample: per level, its width times
        its voxels (the padded input's, downsampled as far as that level) times its blocks, down and up."""
        kwargs = arch_kwargs(configuration)
        blocks, scales = kwargs["blocks_down"], level_scales(configuration)
        voxels, total = math.prod(self.padded_patch(configuration)), 0
        for level, n in enumerate(blocks):
            up = 1 if level < len(blocks) - 1 else 0
            total += kwargs["init_filters"] * 2**level * voxels * (n + up)
            voxels /= math.prod(scales[level])
        return int(total)

    def build(self, configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True):
        from segflow.networks.monai_networks import build_segresnet

        return build_segresnet(configuration, in_channels, num_classes, deep_supervision)


FAMILY = SegResNet()
