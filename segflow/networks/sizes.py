"""The parameters of a network's layers, counted without building it: what the network families
(``segflow.networks.families``) add up for a plans configuration. The workflow sizes its jobs' memory at every
Snakemake start, where importing torch and MONAI would take seconds; the tests compare the counts with the
built networks'."""

from __future__ import annotations

import math


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
