"""nnU-Net's two U-Nets, built from a configuration of ``plans.json`` (method reference §5.3, §3.10).

**PlainConvUNet.** Encoder stage s: ``n_conv_per_stage[s]`` blocks of convolution (kernel k_s, padding
(k-1)/2, bias) -> InstanceNorm (affine, eps 1e-5) -> LeakyReLU(0.01); the first convolution of a stage
carries its stride, so downsampling is a strided convolution.

**ResidualEncoderUNet.** A stem (one such block at the width of stage 0), then per stage
``n_blocks_per_stage[s]`` residual blocks: conv-norm-LeakyReLU, conv-norm, plus the input, LeakyReLU. The
first block of a stage carries the stride; where it changes the width or the size, the input passes an
average pooling (kernel = stride) and a 1 x 1 convolution without bias and a norm before it is added.

**Decoder** (both; bottleneck upwards): transposed convolution (kernel = stride = the stride of the stage
below) to the skip's width, concatenation with the skip, ``n_conv_per_stage_decoder`` blocks with the
encoder kernel of that resolution, and a 1 x 1 segmentation head. With deep supervision the outputs come
highest resolution first, one per decoder stage; without it only the full-resolution logits.

Weights: Kaiming normal (a = 0.01) for (transposed) convolutions, biases 0; in residual blocks the last norm
starts at 0, so that every block starts as its skip.

Module names follow nnU-Net v2's networks (dynamic_network_architectures) so that a state dict moves
between segflow and nnU-Net without renaming, including nnU-Net's aliases: every block lists its modules
twice (``conv``/``norm``/``nonlin`` and ``all_modules``), and the decoder holds the encoder (``decoder.encoder``).
The aliases are the same tensors; ``parameters()`` yields each once.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from segflow.plans import network_class

NEGATIVE_SLOPE = 0.01


def _ops(dim: int):
    if dim == 3:
        return nn.Conv3d, nn.ConvTranspose3d, nn.InstanceNorm3d, nn.AvgPool3d
    if dim == 2:
        return nn.Conv2d, nn.ConvTranspose2d, nn.InstanceNorm2d, nn.AvgPool2d
    raise ValueError(f"unsupported dimensionality {dim}")


def _per_axis(value, dim: int) -> list[int]:
    return [value] * dim if isinstance(value, int) else list(value)


class ConvNormAct(nn.Module):
    """Convolution -> InstanceNorm -> LeakyReLU (the activation optional)."""

    def __init__(self, dim, in_channels, out_channels, kernel, stride=1, bias=True, activation=True):
        super().__init__()
        conv, _, norm, _ = _ops(dim)
        kernel = _per_axis(kernel, dim)
        padding = [(k - 1) // 2 for k in kernel]
        self.conv = conv(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=bias)
        self.norm = norm(out_channels, eps=1e-5, affine=True)
        modules = [self.conv, self.norm]
        if activation:
            self.nonlin = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
            modules.append(self.nonlin)
        self.all_modules = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_modules(x)


def _stack(block, dim, n, in_channels, out_channels, kernel, first_stride) -> nn.Sequential:
    """``n`` blocks, the first changing the width and carrying the stride."""
    blocks = [block(dim, in_channels, out_channels, kernel, first_stride)]
    blocks += [block(dim, out_channels, out_channels, kernel) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


class StackedConvBlocks(nn.Module):
    def __init__(self, dim, n, in_channels, out_channels, kernel, first_stride=1):
        super().__init__()
        self.convs = _stack(ConvNormAct, dim, n, in_channels, out_channels, kernel, first_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class ResidualBlock(nn.Module):
    def __init__(self, dim, in_channels, out_channels, kernel, stride=1):
        super().__init__()
        self.conv1 = ConvNormAct(dim, in_channels, out_channels, kernel, stride)
        self.conv2 = ConvNormAct(dim, out_channels, out_channels, kernel, activation=False)
        self.nonlin2 = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        stride = _per_axis(stride, dim)
        skip = []
        if any(s != 1 for s in stride):
            skip.append(_ops(dim)[3](stride, stride))
        if in_channels != out_channels:
            skip.append(ConvNormAct(dim, in_channels, out_channels, 1, bias=False, activation=False))
        self.skip = nn.Sequential(*skip) if skip else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.skip is None else self.skip(x)
        out = self.conv2(self.conv1(x))
        out += residual
        return self.nonlin2(out)


class StackedResidualBlocks(nn.Module):
    def __init__(self, dim, n, in_channels, out_channels, kernel, first_stride):
        super().__init__()
        self.blocks = _stack(ResidualBlock, dim, n, in_channels, out_channels, kernel, first_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class PlainConvEncoder(nn.Module):
    def __init__(self, in_channels, features_per_stage, kernel_sizes, strides, n_conv_per_stage):
        super().__init__()
        dim = len(kernel_sizes[0])
        stages, channels = [], in_channels
        for features, kernel, stride, n in zip(
            features_per_stage, kernel_sizes, strides, n_conv_per_stage, strict=True
        ):
            stages.append(nn.Sequential(StackedConvBlocks(dim, n, channels, features, kernel, stride)))
            channels = features
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return stage_outputs(self.stages, x)


def stage_outputs(stages: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every stage: the decoder's skips, the last one its input."""
    outputs = []
    for stage in stages:
        x = stage(x)
        outputs.append(x)
    return outputs


class ResidualEncoder(nn.Module):
    def __init__(self, in_channels, features_per_stage, kernel_sizes, strides, n_blocks_per_stage):
        super().__init__()
        dim = len(kernel_sizes[0])
        self.stem = StackedConvBlocks(dim, 1, in_channels, features_per_stage[0], kernel_sizes[0])
        stages, channels = [], features_per_stage[0]
        for features, kernel, stride, n in zip(
            features_per_stage, kernel_sizes, strides, n_blocks_per_stage, strict=True
        ):
            stages.append(StackedResidualBlocks(dim, n, channels, features, kernel, stride))
            channels = features
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return stage_outputs(self.stages, self.stem(x))


class UNetDecoder(nn.Module):
    def __init__(
        self, encoder, features_per_stage, kernel_sizes, strides, n_conv_per_stage, num_classes, deep_supervision
    ):
        super().__init__()
        dim = len(kernel_sizes[0])
        conv, transposed, _, _ = _ops(dim)
        self.deep_supervision = deep_supervision
        self.encoder = encoder  # nnU-Net's alias: the decoder's state dict holds the encoder's too
        stages, transpconvs, seg_layers = [], [], []
        for s in range(len(features_per_stage) - 2, -1, -1):  # from just below the bottleneck up
            below, here, stride = features_per_stage[s + 1], features_per_stage[s], strides[s + 1]
            transpconvs.append(transposed(below, here, stride, stride=stride, bias=True))
            n = n_conv_per_stage[len(features_per_stage) - 2 - s]
            stages.append(StackedConvBlocks(dim, n, 2 * here, here, kernel_sizes[s]))
            seg_layers.append(conv(here, num_classes, 1, bias=True))
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(transpconvs)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips: list[torch.Tensor]):
        x = skips[-1]
        outputs = []
        last = len(self.stages) - 1
        for i, (up, block, head) in enumerate(zip(self.transpconvs, self.stages, self.seg_layers, strict=True)):
            x = block(torch.cat((up(x), skips[-(i + 2)]), dim=1))
            if self.deep_supervision or i == last:
                outputs.append(head(x))
        outputs = outputs[::-1]  # highest resolution first
        return outputs if self.deep_supervision else outputs[0]


class UNet(nn.Module):
    """An encoder and nnU-Net's decoder; ``deep_supervision`` switches between all outputs and the finest."""

    def __init__(self, encoder: nn.Module, decoder: UNetDecoder, scales: list[list[float]]):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.scales = scales
        for module in self.modules():  # modules() visits the aliased encoder once
            init_weights(module)

    @property
    def deep_supervision(self) -> bool:
        return self.decoder.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, value: bool) -> None:
        self.decoder.deep_supervision = value

    @property
    def output_scales(self) -> list[list[float]]:
        """The scale of each output, highest resolution first."""
        return self.scales if self.deep_supervision else self.scales[:1]

    def forward(self, x: torch.Tensor):
        return self.decoder(self.encoder(x))


def init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=NEGATIVE_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    if isinstance(module, ResidualBlock):
        nn.init.zeros_(module.conv2.norm.weight)
        nn.init.zeros_(module.conv2.norm.bias)


def build_unet(configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True) -> UNet:
    """The U-Net a (resolved) plans configuration describes: its ``network_class_name`` and ``arch_kwargs``."""
    kwargs = configuration["architecture"]["arch_kwargs"]
    features, kernels, strides = kwargs["features_per_stage"], kwargs["kernel_sizes"], kwargs["strides"]
    if network_class(configuration) == "ResidualEncoderUNet":
        encoder = ResidualEncoder(in_channels, features, kernels, strides, kwargs["n_blocks_per_stage"])
    else:
        encoder = PlainConvEncoder(in_channels, features, kernels, strides, kwargs["n_conv_per_stage"])
    decoder = UNetDecoder(
        encoder, features, kernels, strides, kwargs["n_conv_per_stage_decoder"], num_classes, deep_supervision
    )
    return UNet(encoder, decoder, deep_supervision_scales(strides))


def deep_supervision_scales(strides) -> list[list[float]]:
    """The scale of each decoder output, highest resolution first (all but the bottleneck's)."""
    return (1 / np.cumprod(np.array(strides, dtype=np.float64), axis=0)).tolist()[:-1]


def scaled_size(size: int, scale: float) -> int:
    """The size of an axis at a deep-supervision scale (that of nnU-Net's downsampled targets)."""
    return int(round(size * scale))
