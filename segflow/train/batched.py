"""Augmentation applied to a whole batch at once, on the training device (method reference §5.6; issue 14).

batchgeneratorsv2 transforms one sample at a time in CPU workers. The functions here do the same arithmetic
for a batch B x C x (Z x) Y x X in a few tensor operations, given each sample's parameters as tensors: a
B x D flip mask, B x C factors and masks. They equal batchgeneratorsv2's ``_apply_to_image`` applied sample
by sample with the same parameters (tests/test_batched_augmentation.py; Gaussian noise, whose draws cannot
be shared, by its distribution), so that the parameters can be drawn as nnunetv2 draws them and only the
work moves to the device.

Channels a transform leaves alone have ``applied`` False; their values pass through unchanged. The batch is
changed in place (and returned): on a CPU the work is bound by memory traffic, so only the (sample, channel)
rows a transform applies to are gathered, transformed in place and written back.
"""

from __future__ import annotations

import torch

EPS = 1e-7


def _on_applied(batch: torch.Tensor, applied: torch.Tensor, transform) -> torch.Tensor:
    """Run ``transform(rows, index)`` on the (sample, channel) rows where ``applied`` (B x C), each row a
    channel's voxels flattened, and write the result back into ``batch``."""
    rows = batch.view(batch.shape[0] * batch.shape[1], -1)
    index = applied.flatten().nonzero().flatten().to(batch.device)
    if index.numel() == len(rows):  # every row: in place, no copies
        transform(rows, index)
    elif index.numel():
        rows.index_copy_(0, index, transform(rows.index_select(0, index), index))
    return batch


def _selected(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The per-row values of the chosen rows, as a column that broadcasts over a row's voxels."""
    return values.flatten().to(index.device)[index][:, None]


def _per_row(rows: torch.Tensor, statistic) -> torch.Tensor:
    """A statistic of each row, as a column. Row by row: on a CPU, whole-tensor reductions of one row are several
    times faster than the same reduction along a dimension (measured: std, mean and min/max of 8 rows of 128^3)."""
    return torch.stack([statistic(row) for row in rows])[:, None]


def mirror(batch: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flip sample b along spatial axis d where ``flips[b, d]``; works for images and label maps alike."""
    for b, axes in enumerate(flips.tolist()):
        dims = [d + 1 for d, flip in enumerate(axes) if flip]
        if dims:
            batch[b] = batch[b].flip(dims)
    return batch


def multiply(batch: torch.Tensor, factors: torch.Tensor, applied: torch.Tensor) -> torch.Tensor:
    """Multiplicative brightness: channel c of sample b times ``factors[b, c]``."""
    return _on_applied(batch, applied, lambda rows, index: rows.mul_(_selected(factors, index)))


def contrast(batch: torch.Tensor, factors: torch.Tensor, applied: torch.Tensor, preserve_range: bool) -> torch.Tensor:
    """Contrast around each channel's mean, clipped to the channel's former range if ``preserve_range``."""

    def transform(rows, index):
        mean = _per_row(rows, torch.mean)
        if preserve_range:
            low, high = _per_row(rows, torch.amin), _per_row(rows, torch.amax)
        rows.sub_(mean).mul_(_selected(factors, index)).add_(mean)
        return rows.clamp_(low, high) if preserve_range else rows

    return _on_applied(batch, applied, transform)


def gamma(
    batch: torch.Tensor,
    gammas: torch.Tensor,
    applied: torch.Tensor,
    invert: torch.Tensor,
    retain_stats: torch.Tensor,
) -> torch.Tensor:
    """Gamma on the channel's range scaled to [0, 1], optionally on the inverted image (inverted back after)
    and with the channel's mean and standard deviation restored."""

    def transform(rows, index):
        sign = 1.0 - 2.0 * _selected(invert, index).to(rows.dtype)
        retain = _selected(retain_stats, index)
        rows.mul_(sign)
        std, mean = _per_row(rows, torch.std), _per_row(rows, torch.mean)
        low, high = _per_row(rows, torch.amin), _per_row(rows, torch.amax)
        span = high - low
        rows.sub_(low).div_(span.clamp(min=EPS)).pow_(_selected(gammas, index).to(rows.dtype)).mul_(span).add_(low)
        new_std, new_mean = _per_row(rows, torch.std), _per_row(rows, torch.mean)
        scale = torch.where(retain, std / new_std.clamp(min=EPS), 1.0)
        shift = torch.where(retain, mean - new_mean * scale, 0.0)
        return rows.mul_(scale).add_(shift).mul_(sign)

    return _on_applied(batch, applied, transform)


def add_noise(
    batch: torch.Tensor, sigmas: torch.Tensor, applied: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian noise with standard deviation ``sigmas[b, c]``. (nnunetv2 calls its range (0, 0.1) a noise
    variance, but batchgeneratorsv2 uses the drawn value as the standard deviation; so does this.)"""

    def transform(rows, index):
        noise = torch.randn(rows.shape, generator=generator, device=rows.device, dtype=rows.dtype)
        return rows.add_(noise.mul_(_selected(sigmas, index).to(rows.dtype)))

    return _on_applied(batch, applied, transform)
