"""Augmentation applied to a whole batch at once, on the training device (method reference §5.6; issue 14).

batchgeneratorsv2 transforms one sample at a time in CPU workers. The functions here do the same arithmetic
for a batch B x C x (Z x) Y x X in a few tensor operations, given each sample's parameters as tensors: a
B x D flip mask, B x C factors and masks. They equal batchgeneratorsv2's ``_apply_to_image`` applied sample
by sample with the same parameters (tests/test_batched_augmentation.py; Gaussian noise, whose draws cannot
be shared, by its distribution), so that the parameters can be drawn as nnunetv2 draws them and only the
work moves to the device.

Channels a transform leaves alone have ``applied`` False; their values pass through unchanged.
"""

from __future__ import annotations

import torch

EPS = 1e-7


def _per_channel(values: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """B x C values shaped to broadcast over a batch's spatial axes."""
    return values.reshape(*values.shape, *[1] * (batch.ndim - 2)).to(batch.dtype)


def _channel_reduce(batch: torch.Tensor, how) -> torch.Tensor:
    """A per-(sample, channel) statistic, shaped to broadcast over the spatial axes."""
    flat = batch.flatten(2)
    return how(flat).reshape(*batch.shape[:2], *[1] * (batch.ndim - 2))


def mirror(batch: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flip sample b along spatial axis d where ``flips[b, d]``; works for images and label maps alike."""
    for axis in range(flips.shape[1]):
        chosen = flips[:, axis].reshape(-1, *[1] * (batch.ndim - 1))
        batch = torch.where(chosen, batch.flip(axis + 2), batch)
    return batch


def multiply(batch: torch.Tensor, factors: torch.Tensor, applied: torch.Tensor) -> torch.Tensor:
    """Multiplicative brightness: channel c of sample b times ``factors[b, c]``."""
    return batch * _per_channel(torch.where(applied, factors, torch.ones_like(factors)), batch)


def contrast(batch: torch.Tensor, factors: torch.Tensor, applied: torch.Tensor, preserve_range: bool) -> torch.Tensor:
    """Contrast around each channel's mean, clipped to the channel's former range if ``preserve_range``."""
    mean = _channel_reduce(batch, lambda x: x.mean(-1))
    out = (batch - mean) * _per_channel(factors, batch) + mean
    if preserve_range:
        low = _channel_reduce(batch, lambda x: x.amin(-1))
        high = _channel_reduce(batch, lambda x: x.amax(-1))
        out = torch.minimum(torch.maximum(out, low), high)
    return torch.where(_per_channel(applied, batch).bool(), out, batch)


def gamma(
    batch: torch.Tensor,
    gammas: torch.Tensor,
    applied: torch.Tensor,
    invert: torch.Tensor,
    retain_stats: torch.Tensor,
) -> torch.Tensor:
    """Gamma on the channel's range scaled to [0, 1], optionally on the inverted image (inverted back after)
    and with the channel's mean and standard deviation restored."""
    sign = _per_channel(torch.where(invert, -1.0, 1.0), batch)
    x = batch * sign
    mean = _channel_reduce(x, lambda v: v.mean(-1))
    std = _channel_reduce(x, lambda v: v.std(-1))
    low = _channel_reduce(x, lambda v: v.amin(-1))
    span = _channel_reduce(x, lambda v: v.amax(-1)) - low
    out = ((x - low) / span.clamp(min=EPS)) ** _per_channel(gammas, batch) * span + low
    new_mean = _channel_reduce(out, lambda v: v.mean(-1))
    new_std = _channel_reduce(out, lambda v: v.std(-1))
    restored = (out - new_mean) * (std / new_std.clamp(min=EPS)) + mean
    out = torch.where(_per_channel(retain_stats, batch).bool(), restored, out) * sign
    return torch.where(_per_channel(applied, batch).bool(), out, batch)


def add_noise(
    batch: torch.Tensor, sigmas: torch.Tensor, applied: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian noise with standard deviation ``sigmas[b, c]``. (nnunetv2 calls its range (0, 0.1) a noise
    variance, but batchgeneratorsv2 uses the drawn value as the standard deviation; so does this.)"""
    noise = torch.randn(batch.shape, generator=generator, device=batch.device, dtype=batch.dtype)
    return batch + noise * _per_channel(torch.where(applied, sigmas, torch.zeros_like(sigmas)), batch)
