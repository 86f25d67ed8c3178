"""What a network of a plans configuration holds, read from its description without building it (the workflow
sizes its jobs' memory at every Snakemake start, where importing torch and MONAI would take seconds): its
parameters, counted as its builder lays them out (``segflow.networks.unet``, MONAI's classes in
``segflow.networks.monai_networks``), and the input MONAI's networks pad a patch to. The tests compare both
with the built networks'."""

from __future__ import annotations

import math

import numpy as np

from segflow.plan import network_class


def conv(in_channels: int, out_channels: int, kernel, bias: bool = True) -> int:
    """A (transposed) convolution's weights and bias; ``kernel``: its size per axis."""
    return in_channels * out_channels * math.prod(kernel) + (out_channels if bias else 0)


def affine_norm(channels: int) -> int:
    return 2 * channels


def conv_norm(in_channels: int, out_channels: int, kernel, bias: bool = True) -> int:
    return conv(in_channels, out_channels, kernel, bias) + affine_norm(out_channels)


def stacked_convs(n: int, in_channels: int, out_channels: int, kernel) -> int:
    return conv_norm(in_channels, out_channels, kernel) + (n - 1) * conv_norm(out_channels, out_channels, kernel)


def residual_blocks(n: int, in_channels: int, out_channels: int, kernel) -> int:
    """nnU-Net's residual blocks: two conv-norms each, and a 1 x 1 projection where the first changes the width."""
    dim = len(kernel)
    projection = conv_norm(in_channels, out_channels, [1] * dim, bias=False) if in_channels != out_channels else 0
    first = conv_norm(in_channels, out_channels, kernel) + conv_norm(out_channels, out_channels, kernel) + projection
    return first + (n - 1) * 2 * conv_norm(out_channels, out_channels, kernel)


def unet_parameters(kwargs: dict, residual: bool, in_channels: int, num_classes: int) -> int:
    """nnU-Net's PlainConvUNet or ResidualEncoderUNet (segflow.networks.unet)."""
    features, kernels, strides = kwargs["features_per_stage"], kwargs["kernel_sizes"], kwargs["strides"]
    dim, count = len(kernels[0]), 0
    if residual:
        count += conv_norm(in_channels, features[0], kernels[0])
        channels, per_stage, stage = features[0], kwargs["n_blocks_per_stage"], residual_blocks
    else:
        channels, per_stage, stage = in_channels, kwargs["n_conv_per_stage"], stacked_convs
    for n, width, kernel in zip(per_stage, features, kernels, strict=True):
        count += stage(n, channels, width, kernel)
        channels = width
    for s in range(len(features) - 2, -1, -1):
        count += conv(features[s + 1], features[s], strides[s + 1])
        count += stacked_convs(
            kwargs["n_conv_per_stage_decoder"][len(features) - 2 - s], 2 * features[s], features[s], kernels[s]
        )
        count += conv(features[s], num_classes, [1] * dim)
    return count


def segresnet_scales(resolution, levels: int, dim: int) -> list[list[int]]:
    """SegResNetDS's downsampling factor per level (MONAI's ``scales_for_resolution``): an axis whose spacing is
    finer than the coarsest by 2**n is not downsampled at the first n levels."""
    if resolution is None:
        return [[2] * dim] * levels
    finer = np.floor(np.log2(np.max(resolution) / np.asarray(resolution, dtype=float))).astype(int)
    coarsening = int(finer.max())
    scales = [[1 if 2**i >= 2**n else 2 for n in finer] for i in range(coarsening)]
    return (scales + [[2] * dim] * (levels - coarsening))[:levels]


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


SWIN_WINDOW = 7
SWIN_MLP_RATIO = 4
SWIN_PATCH = 2  # the patch embedding's stride; four patch mergings follow it
SWIN_DOWNSAMPLINGS = 5


def swinunetr_parameters(kwargs: dict, in_channels: int, num_classes: int) -> int:
    """MONAI's SwinUNETR: a Swin transformer (patch embedding, windowed attention blocks, patch merging) and a
    convolutional U-Net decoder of residual blocks with non-affine instance norms."""
    size, dim = kwargs["feature_size"], kwargs["spatial_dims"]
    k3, k2, k1 = [3] * dim, [2] * dim, [1] * dim
    count = conv(in_channels, size, k2)  # patch embedding
    for stage, (depth, heads) in enumerate(zip(kwargs["depths"], kwargs["num_heads"], strict=True)):
        width = size * 2**stage
        attention = (2 * SWIN_WINDOW - 1) ** dim * heads + 4 * width * width + 4 * width
        mlp = 2 * SWIN_MLP_RATIO * width * width + (SWIN_MLP_RATIO + 1) * width
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


def padded_patch(configuration: dict) -> list[int]:
    """The input size a patch becomes inside the network: MONAI's networks pad it with zeros to what their
    downsampling divides (SwinUNETR: 32 per axis; SegResNetDS: the product of its levels' factors); nnU-Net's
    U-Nets take it as it is."""
    patch, kwargs = configuration["patch_size"], configuration["architecture"]["arch_kwargs"]
    name = network_class(configuration)
    if name == "SwinUNETR":
        divisors = [SWIN_PATCH**SWIN_DOWNSAMPLINGS] * len(patch)
    elif name == "SegResNetDS":
        scales = segresnet_scales(kwargs.get("resolution"), len(kwargs["blocks_down"]), len(patch))
        divisors = np.prod(np.array(scales[:-1]), axis=0).astype(int).tolist() if len(scales) > 1 else [1] * len(patch)
    else:
        return [int(p) for p in patch]
    return [math.ceil(p / d) * d for p, d in zip(patch, divisors, strict=True)]


def segresnet_block_features(configuration: dict) -> int:
    """The values of the feature maps SegResNetDS's residual blocks work on, for one sample: per level, its width
    times its voxels (the padded input's, downsampled as far as that level) times its blocks, down and up."""
    kwargs = configuration["architecture"]["arch_kwargs"]
    blocks, dim = kwargs["blocks_down"], len(configuration["patch_size"])
    scales = segresnet_scales(kwargs.get("resolution"), len(blocks), dim)
    voxels, total = math.prod(padded_patch(configuration)), 0
    for level, n in enumerate(blocks):
        up = 1 if level < len(blocks) - 1 else 0
        total += kwargs["init_filters"] * 2**level * voxels * (n + up)
        voxels /= math.prod(scales[level])
    return int(total)


def parameter_count(configuration: dict, in_channels: int, num_classes: int) -> int:
    """Trainable parameters of the network a (resolved) plans configuration describes."""
    kwargs, name = configuration["architecture"]["arch_kwargs"], network_class(configuration)
    if name in ("PlainConvUNet", "ResidualEncoderUNet"):
        return unet_parameters(kwargs, name == "ResidualEncoderUNet", in_channels, num_classes)
    if name == "SegResNetDS":
        return segresnet_parameters(kwargs, in_channels, num_classes)
    if name == "SwinUNETR":
        return swinunetr_parameters(kwargs, in_channels, num_classes)
    raise ValueError(f"the plans name the network {name!r}, whose size segflow does not know")
