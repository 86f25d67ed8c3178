"""MedNeXt (Roy et al., "MedNeXt: Transformer-driven Scaling of ConvNets for Medical Image Segmentation",
MICCAI 2023), written from the paper's description: a U-Net of ConvNeXt blocks.

* A block: a depthwise convolution (kernel k), a GroupNorm with one group per channel, a 1 x 1 convolution that
  expands the channels by R, GELU, a 1 x 1 convolution back; the input added (residual).
* Down- and upsampling are blocks too: the depthwise convolution strided by 2 (transposed, up), the channels
  doubled (halved) by the last 1 x 1 convolution, and a strided 1 x 1 (transposed) convolution on the residual
  path. Upsampled outputs are padded by one at the start of each axis to twice the input's size.
* Four levels down from C = 32 channels to a 16 C bottleneck and four up; a decoder level adds the encoder's
  output of its level (no concatenation); 1 x 1 transposed-convolution heads at every level for deep supervision.
* Per stage (encoder levels 0-3, bottleneck, decoder levels 3-0) its expansion ratio R and number of blocks; the
  down block into a stage and the up block into a decoder level take that stage's R.

The network takes multiples of 16 per axis, and its GroupNorms need more than one voxel at the bottleneck: its
authors' nnU-Net trainer asks for multiples of 32 (``input_shape_must_be_divisible_by = 2**5``), and segflow's
pads a patch with zeros up to them (``PadsToDivisor``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from segflow.networks.padding import PadsToDivisor

LEVELS = 4
DIVISOR = 2 ** (LEVELS + 1)
CONV = {2: nn.Conv2d, 3: nn.Conv3d}
TRANSPOSED = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


class MedNeXtBlock(nn.Module):
    """A ConvNeXt block; ``resample`` "down" or "up" makes it the strided block between two levels."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, kernel: int, dim: int, resample=None):
        super().__init__()
        depthwise = TRANSPOSED[dim] if resample == "up" else CONV[dim]
        stride = 1 if resample is None else 2
        self.conv1 = depthwise(in_channels, in_channels, kernel, stride=stride, padding=kernel // 2, groups=in_channels)
        self.norm = nn.GroupNorm(in_channels, in_channels)
        self.conv2 = CONV[dim](in_channels, expansion * in_channels, 1)
        self.act = nn.GELU()
        self.conv3 = CONV[dim](expansion * in_channels, out_channels, 1)
        self.res_conv = None
        if resample is not None:
            projection = TRANSPOSED[dim] if resample == "up" else CONV[dim]
            self.res_conv = projection(in_channels, out_channels, 1, stride=2)
        self.front_pad = (1, 0) * dim if resample == "up" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.act(self.conv2(self.norm(self.conv1(x)))))
        shortcut = x if self.res_conv is None else self.res_conv(x)
        if self.front_pad:  # a transposed stride-2 convolution gives 2n - 1 per axis
            y, shortcut = functional.pad(y, self.front_pad), functional.pad(shortcut, self.front_pad)
        return y + shortcut


def stage(channels: int, expansion: int, blocks: int, kernel: int, dim: int) -> nn.Sequential:
    return nn.Sequential(*[MedNeXtBlock(channels, channels, expansion, kernel, dim) for _ in range(blocks)])


class MedNeXt(PadsToDivisor, nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int,
        expansion: list[int],
        blocks: list[int],
        kernel: int,
        dim: int,
        deep_supervision: bool = True,
    ):
        super().__init__()
        widths = [channels * 2**level for level in range(LEVELS + 1)]
        self.dim, self.deep_supervision = dim, deep_supervision
        self.stem = CONV[dim](in_channels, channels, 1)
        self.encoder = nn.ModuleList(stage(widths[i], expansion[i], blocks[i], kernel, dim) for i in range(LEVELS))
        self.down = nn.ModuleList(
            MedNeXtBlock(widths[i], widths[i + 1], expansion[i + 1], kernel, dim, "down") for i in range(LEVELS)
        )
        self.bottleneck = stage(widths[LEVELS], expansion[LEVELS], blocks[LEVELS], kernel, dim)
        # Decoder level l is stage 2 * LEVELS - l: level 3 the first after the bottleneck.
        decoder_stage = [2 * LEVELS - level for level in range(LEVELS)]
        self.up = nn.ModuleList(
            MedNeXtBlock(widths[level + 1], widths[level], expansion[decoder_stage[level]], kernel, dim, "up")
            for level in range(LEVELS)
        )
        self.decoder = nn.ModuleList(
            stage(widths[level], expansion[decoder_stage[level]], blocks[decoder_stage[level]], kernel, dim)
            for level in range(LEVELS)
        )
        # Every level's head is built, with deep supervision or without: a trained model predicts without it.
        self.heads = nn.ModuleList(TRANSPOSED[dim](widths[level], num_classes, 1) for level in range(LEVELS + 1))

    def divisors(self) -> list[int]:
        return [DIVISOR] * self.dim

    def padded_forward(self, x: torch.Tensor):
        x = self.stem(x)
        skips = []
        for encode, down in zip(self.encoder, self.down, strict=True):
            x = encode(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        outputs = {LEVELS: self.heads[LEVELS](x)} if self.deep_supervision else {}
        for level in reversed(range(LEVELS)):
            x = self.decoder[level](skips.pop() + self.up[level](x))
            if self.deep_supervision or level == 0:
                outputs[level] = self.heads[level](x)
        if not self.deep_supervision:
            return outputs[0]
        return [outputs[level] for level in range(LEVELS + 1)]

    @property
    def output_scales(self) -> list[list[float]]:
        return [[0.5**level] * self.dim for level in range(LEVELS + 1 if self.deep_supervision else 1)]


def build_mednext(configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True) -> MedNeXt:
    kwargs = configuration["architecture"]["arch_kwargs"]
    return MedNeXt(
        in_channels,
        num_classes,
        kwargs["n_channels"],
        kwargs["exp_r"],
        kwargs["block_counts"],
        kwargs["kernel_size"],
        len(configuration["patch_size"]),
        deep_supervision,
    )
