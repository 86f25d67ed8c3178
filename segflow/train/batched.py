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
    """A statistic of each row, as a column. Row by row on a CPU, where whole-tensor reductions of one row are
    several times faster than the same reduction along a dimension (measured: std, mean and min/max of 8 rows of
    128^3); along the dimension elsewhere, one kernel for all rows."""
    if rows.device.type == "cpu":
        return torch.stack([statistic(row) for row in rows])[:, None]
    return statistic(rows, 1, keepdim=True)


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


def _blur_kernels(sigmas: torch.Tensor) -> torch.Tensor:
    """R x K Gaussian kernels for R sigmas, each as batchgeneratorsv2 builds it (odd size nearest to
    6 sigma + 0.5, normalised) and centred in the common size K of the largest, padded with zero taps."""
    sizes = [_nearest_odd(6 * s + 0.5) for s in sigmas.tolist()]
    half = max(sizes) // 2
    taps = torch.arange(-half, half + 1, dtype=torch.float32, device=sigmas.device)
    reach = torch.tensor([(k - 1) / 2 for k in sizes], device=sigmas.device)[:, None]
    pdf = torch.exp(-0.5 * (taps[None] / sigmas[:, None].float()) ** 2) * (taps[None].abs() <= reach)
    return pdf / pdf.sum(1, keepdim=True)


def _nearest_odd(value: float) -> int:
    rounded = round(value)
    if rounded % 2 == 1:
        return rounded
    return rounded + 1 if value - rounded >= 0 else rounded - 1


def blur(batch: torch.Tensor, sigmas: torch.Tensor, applied: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of the applied rows, ``sigmas[b, c, d]`` along spatial axis d, reflecting at the
    border: one grouped convolution per axis for all rows (a row's kernel padded with zero taps to the
    largest, which reflects further but weighs the extra voxels 0)."""
    chosen = applied.flatten().nonzero().flatten()  # where the parameters are: the host
    if not chosen.numel():
        return batch
    spatial = batch.shape[2:]
    index = chosen.to(batch.device)
    rows = batch.view(-1, *spatial).index_select(0, index)[None]
    row_sigmas = sigmas.reshape(-1, len(spatial))[chosen]
    convolve = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}
    for d in range(len(spatial)):
        kernels = _blur_kernels(row_sigmas[:, d]).to(batch.device, batch.dtype)
        half = kernels.shape[1] // 2
        shape = [1] * len(spatial)
        shape[d] = kernels.shape[1]
        padding = [0, 0] * len(spatial)
        padding[2 * (len(spatial) - 1 - d) : 2 * (len(spatial) - d)] = [half, half]
        padded = torch.nn.functional.pad(rows, padding, mode="reflect")
        rows = convolve[len(spatial)](padded, kernels.view(-1, 1, *shape), groups=len(index))
    batch.view(-1, *spatial).index_copy_(0, index, rows[0])
    return batch


def simulate_low_resolution(batch: torch.Tensor, scales: torch.Tensor, applied: torch.Tensor) -> torch.Tensor:
    """Each applied row downsampled (nearest-exact) to ``round(size * scales[b, c, d])`` voxels per axis and
    linearly interpolated back. Row by row: the sizes differ, and interpolation is cheap next to the rest."""
    spatial = batch.shape[2:]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    rows = batch.view(-1, *spatial)
    for r in applied.flatten().nonzero().flatten().tolist():
        size = [round(n * s) for n, s in zip(spatial, scales.reshape(-1, len(spatial))[r].tolist(), strict=True)]
        small = torch.nn.functional.interpolate(rows[r][None, None], size, mode="nearest-exact")
        rows[r] = torch.nn.functional.interpolate(small, spatial, mode=mode)[0, 0]
    return batch


def mask_outside(batch: torch.Tensor, seg: torch.Tensor, channels, value: float = 0.0) -> torch.Tensor:
    """Channels normalised inside the non-zero mask set to ``value`` where the label map's first channel is
    negative (outside the mask, or outside the image)."""
    if channels:
        outside = (seg[:, :1] < 0).expand(-1, len(channels), *seg.shape[2:])
        batch[:, list(channels)] = batch[:, list(channels)].masked_fill(outside, value)
    return batch


def _centred_grid(patch_size, device) -> torch.Tensor:
    """Voxel coordinates of a patch relative to its centre, patch x dim (batchgeneratorsv2's base grid)."""
    axes = [torch.linspace((1 - s) / 2, (s - 1) / 2, s, device=device) for s in patch_size]
    return torch.stack(torch.meshgrid(axes, indexing="ij"), -1)


def sampling_grids(matrices: torch.Tensor, input_shape, patch_size) -> torch.Tensor:
    """``grid_sample`` grids, n x patch x dim, of a patch centred in an input of ``input_shape`` whose voxel
    offsets from the centre are mapped by each sample's matrix (rotation and scaling, n x dim x dim)."""
    base = _centred_grid(patch_size, matrices.device)
    points = base.reshape(1, -1, len(patch_size))
    grid = torch.matmul(points, matrices.float().transpose(1, 2))
    grid = grid / torch.tensor([s / 2 for s in input_shape], device=matrices.device)
    return grid.flip(-1).reshape(len(matrices), *patch_size, len(patch_size))


def _sample(volumes: torch.Tensor, grids: torch.Tensor, mode: str) -> torch.Tensor:
    return torch.nn.functional.grid_sample(volumes, grids, mode=mode, padding_mode="zeros", align_corners=False)


def _reaches_outside(grids: torch.Tensor, input_shape) -> torch.Tensor:
    """Per sample, whether a linear kernel at some grid point draws on voxels outside the input."""
    bound = min(1 - 1 / s for s in input_shape)
    return grids.flatten(1).abs().amax(1) > bound


SCORE = 1000  # batchgeneratorsv2 scales the label indicators to settle ties in float16 as it does


def resample_labels(seg: torch.Tensor, grids: torch.Tensor, pad_label: int, labels=None) -> torch.Tensor:
    """Label maps n x S x ... resampled on ``grids`` as batchgeneratorsv2 2.8.1's spatial transform does: each
    label's indicator (x 1000) interpolated linearly and rounded to float16, the highest score wins (the lowest
    label on a tie, and where the nearest neighbour's label is among the best, it wins); a sample whose
    kernels reach outside the input counts ``pad_label`` there; a sample with two labels takes the second where
    its score passes half. ``labels``: the values the maps may hold (the dataset's), scored whether present or
    not, so that nothing waits for the device to say which are; else those found in ``seg``."""
    out = torch.empty((len(seg), seg.shape[1], *grids.shape[1:-1]), dtype=seg.dtype, device=seg.device)
    outside = _reaches_outside(grids, seg.shape[2:])
    candidates = None if labels is None else sorted({*map(int, labels), pad_label})
    for c in range(seg.shape[1]):
        out[:, c] = _resample_label_channel(seg[:, c : c + 1], grids, pad_label, outside, candidates)
    return out


def _present_labels(volumes: torch.Tensor, pad_label: int, outside) -> list[int]:
    """The label values in ``volumes``, and the padding label where a kernel reaches outside (read from the
    device: a synchronisation)."""
    labels = torch.unique(volumes)
    if outside.any():
        labels = torch.unique(torch.cat([labels, labels.new_tensor([pad_label])]))
    return labels.tolist()


def _resample_label_channel(volumes, grids, pad_label: int, outside, candidates=None) -> torch.Tensor:
    """One label channel (n x 1 x ...) of ``resample_labels``, as n x patch."""
    n, spatial = len(volumes), grids.dim() - 2
    per_sample = (n, *[1] * spatial)
    nearest = (_sample(volumes.float() - pad_label, grids, "nearest") + pad_label).to(volumes.dtype)[:, 0]
    values = candidates if candidates is not None else _present_labels(volumes, pad_label, outside)
    labels = torch.tensor(values, dtype=volumes.dtype, device=volumes.device)
    indicators = volumes == labels.view(1, -1, *[1] * spatial)  # n x L x ...
    present = indicators.flatten(2).any(2).T | (outside[None] & (labels == pad_label)[:, None])  # L x n
    if volumes.device.type == "cpu":  # only the labels in the batch are scored (asking costs nothing here)
        kept = present.any(1)
        values = [value for value, keep in zip(values, kept.tolist(), strict=True) if keep]
        labels, indicators, present = labels[kept], indicators[:, kept], present[kept]
    scores = _label_scores(indicators, values, grids, pad_label, outside)
    scores.masked_fill_(~present.view(len(labels), *per_sample), float("-inf"))
    best, winner = scores.max(0)  # the first, i.e. lowest, label on a tie (max(0) is ~8x argmax(0) on a CPU)
    nearest_index = torch.searchsorted(labels, nearest.contiguous()).clamp(max=len(labels) - 1)
    nearest_score = scores.gather(0, nearest_index[None])[0]
    result = torch.where(nearest_score == best, nearest, labels[winner])
    pairs = present.sum(0) == 2
    if volumes.device.type != "cpu" or pairs.any():  # (asked on the CPU only, where asking costs nothing)
        # two labels: the second where its score passes half of SCORE, the nearest on a tie
        first = labels[present.int().argmax(0)].view(per_sample)
        second_index = len(labels) - 1 - present.flip(0).int().argmax(0)
        second = labels[second_index].view(per_sample)
        high = scores.gather(0, second_index.view(1, *per_sample).expand(1, *scores.shape[1:]))[0]
        paired = torch.where(high == SCORE / 2, nearest, torch.where(high > SCORE / 2, second, first))
        result = torch.where(pairs.view(per_sample), paired, result)
    return result


def _label_scores(indicators, labels: list[int], grids, pad_label: int, outside) -> torch.Tensor:
    """L x n x patch float16 scores of the ``labels`` from their indicators (n x L x ...): each one x SCORE
    interpolated linearly, all in one resampling; outside the input the padding label's indicator is 1 for the
    samples whose kernels reach there."""
    volumes = indicators.float().mul_(SCORE)
    if pad_label in labels:
        pad, shift = labels.index(pad_label), outside.float().view(-1, *[1] * (grids.dim() - 2)) * SCORE
        volumes[:, pad] -= shift
    scores = _sample(volumes, grids, "bilinear")
    if pad_label in labels:
        scores[:, pad] += shift
    return scores.transpose(0, 1).half()


def resample(
    image: torch.Tensor, seg: torch.Tensor, matrices: torch.Tensor, patch_size, pad_label: int = -1, labels=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The centred ``patch_size`` patch of each (enlarged) sample, resampled through its matrix (rotation and
    scaling): images linearly with zeros outside, label maps by ``resample_labels`` (``labels``: the values they
    may hold). A sample that is neither rotated nor scaled is only cut out of the centre, which the loader does
    (``PatchLoader.centred``)."""
    grids = sampling_grids(matrices.to(image.device), image.shape[2:], patch_size)
    return _sample(image, grids, "bilinear"), resample_labels(seg, grids, pad_label, labels)
