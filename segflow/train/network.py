"""nnU-Net's PlainConvUNet, built from a configuration of ``plans.json`` (method reference §5.3).

Encoder stage s: ``n_conv_per_stage[s]`` blocks of convolution (kernel k_s, padding (k-1)/2, bias) ->
InstanceNorm (affine, eps 1e-5) -> LeakyReLU(0.01); the first convolution of a stage carries its stride, so
downsampling is a strided convolution. Decoder stage (bottleneck upwards): transposed convolution (kernel =
stride = the stride of the stage below) to the skip's width, concatenation with the skip, two blocks with the
encoder kernel of that resolution, and a 1 x 1 segmentation head. With deep supervision the outputs come
highest resolution first, one per decoder stage; without it only the full-resolution logits.
Weights: Kaiming normal (a = 0.01) for (transposed) convolutions, biases 0.
"""

from __future__ import annotations

import torch
from torch import nn

NEGATIVE_SLOPE = 0.01


def _ops(dim: int):
    if dim == 3:
        return nn.Conv3d, nn.ConvTranspose3d, nn.InstanceNorm3d
    if dim == 2:
        return nn.Conv2d, nn.ConvTranspose2d, nn.InstanceNorm2d
    raise ValueError(f"unsupported dimensionality {dim}")


class ConvBlock(nn.Sequential):
    def __init__(self, dim: int, in_channels: int, out_channels: int, kernel, stride=1):
        conv, _, norm = _ops(dim)
        kernel = [kernel] * dim if isinstance(kernel, int) else list(kernel)
        super().__init__(
            conv(in_channels, out_channels, kernel, stride=stride, padding=[(k - 1) // 2 for k in kernel], bias=True),
            norm(out_channels, eps=1e-5, affine=True),
            nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
        )


def stacked_blocks(dim, n, in_channels, out_channels, kernel, first_stride=1) -> nn.Sequential:
    blocks = [ConvBlock(dim, in_channels, out_channels, kernel, first_stride)]
    blocks += [ConvBlock(dim, out_channels, out_channels, kernel) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


class PlainConvUNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        features_per_stage,
        kernel_sizes,
        strides,
        n_conv_per_stage,
        n_conv_per_stage_decoder,
        deep_supervision: bool = True,
    ):
        super().__init__()
        dim = len(kernel_sizes[0])
        _, transposed, _ = _ops(dim)
        self.deep_supervision = deep_supervision
        self.encoder = nn.ModuleList()
        channels = in_channels
        for features, kernel, stride, n in zip(
            features_per_stage, kernel_sizes, strides, n_conv_per_stage, strict=True
        ):
            self.encoder.append(stacked_blocks(dim, n, channels, features, kernel, stride))
            channels = features
        self.upsample, self.decoder, self.heads = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for s in range(len(features_per_stage) - 2, -1, -1):  # from just below the bottleneck up
            below, here = features_per_stage[s + 1], features_per_stage[s]
            stride = strides[s + 1]
            self.upsample.append(transposed(below, here, stride, stride=stride, bias=True))
            n = n_conv_per_stage_decoder[len(features_per_stage) - 2 - s]
            self.decoder.append(stacked_blocks(dim, n, 2 * here, here, kernel_sizes[s]))
            self.heads.append(_ops(dim)[0](here, num_classes, 1, bias=True))
        self.apply(init_weights)

    def forward(self, x: torch.Tensor):
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips[-1]
        outputs = []
        for i, (up, block, head) in enumerate(zip(self.upsample, self.decoder, self.heads, strict=True)):
            x = block(torch.cat((up(x), skips[-(i + 2)]), dim=1))
            if self.deep_supervision or i == len(self.decoder) - 1:
                outputs.append(head(x))
        outputs = outputs[::-1]  # highest resolution first
        return outputs if self.deep_supervision else outputs[0]


def init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=NEGATIVE_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_network(configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True):
    """The network a (resolved) plans configuration describes."""
    kwargs = configuration["architecture"]["arch_kwargs"]
    return PlainConvUNet(
        in_channels,
        num_classes,
        kwargs["features_per_stage"],
        kwargs["kernel_sizes"],
        kwargs["strides"],
        kwargs["n_conv_per_stage"],
        kwargs["n_conv_per_stage_decoder"],
        deep_supervision=deep_supervision,
    )
