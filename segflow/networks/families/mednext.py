"""MedNeXt (Roy et al., MICCAI 2023), the network of nnU-Net Revisited's comparison (Isensee et al., MICCAI 2024)
that scored highest on four of its six datasets as MedNeXt L with kernel 3 (``segflow.networks.mednext`` builds it).

Sizes, as the MedNeXt paper's Table 1 lists them (C = 32 channels at the first level, 4 levels, per stage: encoder
levels 0-3, bottleneck, decoder levels 3-0), and as its authors' code (MIC-DKFZ/MedNeXt,
``create_mednext_v1.py``) configures them:

====  ==============================  ==============================  ====================
size  expansion ratio R per stage      blocks per stage               parameters, kernel 3
====  ==============================  ==============================  ====================
S     2 everywhere                    2 everywhere                    5.6 M
B     2, 3, 4, 4, 4, 4, 4, 3, 2       2 everywhere                    10.5 M
M     2, 3, 4, 4, 4, 4, 4, 3, 2       3, 4, 4, 4, 4, 4, 4, 4, 3       17.6 M
L     3, 4, 8, 8, 8, 8, 8, 4, 3       3, 4, 8, 8, 8, 8, 8, 4, 3       61.8 M
====  ==============================  ==============================  ====================

``networks: [mednext]`` trains MedNeXt L, kernel 3, as nnU-Net Revisited did, with deep supervision at all five
levels and its authors' nnU-Net trainer recipe (below); nnU-Net's data, patches, batches, loss and augmentation
stay, so that only the network differs, as for the other families.
"""

from __future__ import annotations

import math

from segflow.networks.family import ACTIVATION_COPIES, Family, Recipe, arch_kwargs
from segflow.networks.sizes import affine_norm, conv

CHANNELS = 32
LEVELS = 4
KERNEL = 3
SIZES = {
    "S": {"exp_r": [2] * 9, "block_counts": [2] * 9},
    "B": {"exp_r": [2, 3, 4, 4, 4, 4, 4, 3, 2], "block_counts": [2] * 9},
    "M": {"exp_r": [2, 3, 4, 4, 4, 4, 4, 3, 2], "block_counts": [3, 4, 4, 4, 4, 4, 4, 4, 3]},
    "L": {"exp_r": [3, 4, 8, 8, 8, 8, 8, 4, 3], "block_counts": [3, 4, 8, 8, 8, 8, 8, 4, 3]},
}
#: Float32 values training keeps per value of the blocks' feature maps as ``block_features`` counts them, measured
#: with one forward and backward pass of one sample (torch 2.13 on a CPU, peak resident memory over the network's):
#: L 0.94-0.95 on 64^3 and 32 x 96 x 80, 1.01 on 128^2; S 0.91-0.92 on 48^3 and 64^3.
FEATURE_VALUES = 1.05


def block_parameters(in_channels: int, out_channels: int, expansion: int, kernel: int, dim: int, resample: bool):
    """A block: depthwise convolution, GroupNorm, expansion and compression 1 x 1 convolutions, and a strided
    1 x 1 convolution on the residual path of a down or up block."""
    count = in_channels * kernel**dim + in_channels  # depthwise: one input channel per output channel
    count += affine_norm(in_channels)
    count += conv(in_channels, expansion * in_channels, [1] * dim) + conv(
        expansion * in_channels, out_channels, [1] * dim
    )
    return count + (conv(in_channels, out_channels, [1] * dim) if resample else 0)


def stages(kwargs: dict):
    """(stage index, width) of the encoder levels, the bottleneck and the decoder levels, in the order of the
    ``exp_r`` and ``block_counts`` lists."""
    widths = [kwargs["n_channels"] * 2**level for level in range(LEVELS + 1)]
    return list(enumerate(widths + widths[-2::-1]))


def mednext_parameters(kwargs: dict, dim: int, in_channels: int, num_classes: int) -> int:
    expansion, blocks, kernel = kwargs["exp_r"], kwargs["block_counts"], kwargs["kernel_size"]
    widths = [kwargs["n_channels"] * 2**level for level in range(LEVELS + 1)]
    count = conv(in_channels, widths[0], [1] * dim)  # stem
    for index, width in stages(kwargs):
        count += blocks[index] * block_parameters(width, width, expansion[index], kernel, dim, resample=False)
    for level in range(LEVELS):
        count += block_parameters(widths[level], widths[level + 1], expansion[level + 1], kernel, dim, True)
        count += block_parameters(widths[level + 1], widths[level], expansion[2 * LEVELS - level], kernel, dim, True)
    return count + sum(conv(width, num_classes, [1] * dim) for width in widths)  # a head per level


class MedNeXt(Family):
    name = "mednext"
    classes = ("MedNeXt",)
    # nnU-Net Revisited trained MedNeXt with its authors' nnU-Net trainer (MIC-DKFZ/MedNeXt,
    # nnUNetTrainerV2_MedNeXt_L_kernel3, from nnUNetTrainerV2_Optim_and_LR): AdamW, lr 1e-3, nnU-Net's weight decay
    # 3e-5 and poly schedule (nnUNetTrainerV2 sets the poly learning rate every epoch), eps 1e-4 (1e-8 "might cause
    # nans in fp16").
    recipe = Recipe("adamw", 1e-3, 3e-5, "poly", eps=1e-4, source="MIC-DKFZ/MedNeXt nnUNetTrainerV2_MedNeXt_L_kernel3")
    description = "MedNeXt L, kernel 3"

    def architecture(self, configuration: dict, size: str = "L", kernel: int = KERNEL) -> dict:
        return {
            "network_class_name": "segflow.networks.mednext.MedNeXt",
            "arch_kwargs": {"size": size, "n_channels": CHANNELS, "kernel_size": kernel, **SIZES[size]},
            "_kw_requires_import": [],
        }

    def parameters(self, configuration: dict, in_channels: int, num_classes: int) -> int:
        dim = len(configuration["patch_size"])
        return mednext_parameters(arch_kwargs(configuration), dim, in_channels, num_classes)

    def padded_patch(self, configuration: dict) -> list[int]:
        """Multiples of 32 per axis, as its authors' trainer asks (segflow.networks.mednext)."""
        divisor = 2 ** (LEVELS + 1)
        return [math.ceil(p / divisor) * divisor for p in configuration["patch_size"]]

    def block_features(self, configuration: dict) -> int:
        """The values a block computes for one sample (depthwise output, its norm, R times the width expanded and
        activated, the compressed output and the residual sum), over every block, down and up blocks included,
        at the padded input's voxels downsampled to each level."""
        kwargs, dim = arch_kwargs(configuration), len(configuration["patch_size"])
        voxels = math.prod(self.padded_patch(configuration))
        total = 0
        for index, width in stages(kwargs):
            level = index if index <= LEVELS else 2 * LEVELS - index
            per_block = (4 + 2 * kwargs["exp_r"][index]) * width * voxels / 2 ** (dim * level)
            total += (kwargs["block_counts"][index] + (index != LEVELS)) * per_block
        return int(total)

    def activations(self, configuration: dict, num_classes: int) -> int:
        return int(FEATURE_VALUES * self.block_features(configuration) / ACTIVATION_COPIES)

    def build(self, configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True):
        from segflow.networks.mednext import build_mednext

        return build_mednext(configuration, in_channels, num_classes, deep_supervision)


FAMILY = MedNeXt()
