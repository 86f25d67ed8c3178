"""The training loss (method reference §5.4): cross-entropy + soft Dice, deep supervision.

* Labels: ``CE + (-Dice)`` on softmax probabilities, background excluded from Dice, smooth 1e-5, Dice summed
  over the batch too when the plans say ``batch_dice``. An ignore label masks both terms (CE skips it, Dice
  multiplies by the mask).
* Regions (``dataset.json`` labels given as lists): ``BCE-with-logits + (-Dice)`` on sigmoids, all channels
  in Dice; the ignore label, if any, is the last target channel and masks both terms.
* Deep supervision: output i (highest resolution first) weighs ``1 / 2**i``, the lowest resolution 0, all
  normalised to sum 1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from segflow.labels import has_regions, output_channels
from segflow.labels import regions as label_regions
from segflow.networks.unet import scaled_size

SMOOTH = 1e-5


def deep_supervision_weights(n_outputs: int) -> list[float]:
    if n_outputs == 1:  # a network without deep supervision
        return [1.0]
    weights = np.array([1 / 2**i for i in range(n_outputs)])
    weights[-1] = 0
    return (weights / weights.sum()).tolist()


def soft_dice(probabilities, target, batch_dice: bool, mask=None, smooth: float = SMOOTH) -> torch.Tensor:
    """Mean soft Dice of B x C x ... probabilities against a B x C x ... binary target (both same channels)."""
    axes = tuple(range(2, probabilities.ndim))
    if mask is not None:
        target = target * mask
        probabilities = probabilities * mask
    intersect = (probabilities * target).sum(axes)
    sum_pred = probabilities.sum(axes)
    sum_gt = target.sum(axes)
    if batch_dice:
        intersect, sum_pred, sum_gt = intersect.sum(0), sum_pred.sum(0), sum_gt.sum(0)
    dice = (2 * intersect + smooth) / torch.clip(sum_gt + sum_pred + smooth, 1e-8)
    return dice.mean()


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """B x 1 x ... integer labels -> B x C x ... float one-hot."""
    out = torch.zeros((target.shape[0], num_classes, *target.shape[2:]), device=target.device, dtype=torch.float32)
    return out.scatter_(1, target.long(), 1)


class DiceCELoss(nn.Module):
    """Softmax label training. ``target``: B x 1 x ... integer labels (the ignore label allowed)."""

    def __init__(self, batch_dice: bool, ignore_label: int | None = None):
        super().__init__()
        self.batch_dice = batch_dice
        self.ignore_label = ignore_label
        self.ce = nn.CrossEntropyLoss(ignore_index=-100 if ignore_label is None else ignore_label)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.ignore_label is not None:
            mask = (target != self.ignore_label).float()
            target_dice = torch.where(target == self.ignore_label, torch.zeros_like(target), target)
        else:
            target_dice = target
        probabilities = torch.softmax(logits.float(), 1)[:, 1:]
        with torch.no_grad():
            target_onehot = one_hot(target_dice, logits.shape[1])[:, 1:]
        dice = soft_dice(probabilities, target_onehot, self.batch_dice, mask)
        if mask is not None and mask.sum() == 0:
            ce = torch.zeros((), device=logits.device)
        else:
            ce = self.ce(logits, target[:, 0].long())
        return ce - dice


class DiceBCELoss(nn.Module):
    """Sigmoid region training. ``target``: B x R(+1) x ... binary channels; with an ignore label the last
    channel marks ignored voxels."""

    def __init__(self, batch_dice: bool, has_ignore: bool = False):
        super().__init__()
        self.batch_dice = batch_dice
        self.has_ignore = has_ignore
        self.bce = nn.BCEWithLogitsLoss(reduction="none")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.has_ignore:
            mask = 1 - target[:, -1:].float()
            target = target[:, :-1]
        target = target.float()
        dice = soft_dice(torch.sigmoid(logits.float()), target, self.batch_dice, mask)
        bce = self.bce(logits, target)
        if mask is None:
            bce = bce.mean()
        else:
            bce = (bce * mask).sum() / torch.clip(mask.sum(), min=1e-8)  # nnU-Net divides by masked voxels
        return bce - dice


class DeepSupervisionLoss(nn.Module):
    def __init__(self, loss: nn.Module, weights):
        super().__init__()
        self.loss = loss
        self.weights = list(weights)

    def forward(self, outputs, targets) -> torch.Tensor:
        total = 0.0
        for weight, output, target in zip(self.weights, outputs, targets, strict=True):
            if weight:
                total = total + weight * self.loss(output, target)
        return total


def region_targets(seg: torch.Tensor, regions, ignore_label: int | None = None) -> torch.Tensor:
    """B x 1 x ... label map -> B x R(+1) x ... uint8 region channels (a voxel belongs to a region when its
    label is one of the region's labels); with an ignore label one more channel marks it. On seg's device."""
    channels = [torch.isin(seg[:, 0], torch.tensor(region, dtype=seg.dtype, device=seg.device)) for region in regions]
    if ignore_label is not None:
        channels.append(seg[:, 0] == ignore_label)
    return torch.stack(channels, dim=1).to(torch.uint8)


class LabelSetup:
    """How labels become network outputs: softmax over labels, or sigmoid per region (§1.2, §5.4)."""

    def __init__(self, labels: dict):
        self.ignore_label = labels.get("ignore")
        self.regions = label_regions(labels) if has_regions(labels) else None
        self.num_outputs = len(output_channels(labels))

    def loss(self, batch_dice: bool) -> nn.Module:
        if self.regions:
            return DiceBCELoss(batch_dice, has_ignore=self.ignore_label is not None)
        return DiceCELoss(batch_dice, ignore_label=self.ignore_label)

    def target(self, seg: torch.Tensor) -> torch.Tensor:
        if self.regions:
            return region_targets(seg, self.regions, self.ignore_label)
        return seg

    def hard_counts(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """TP, FP, FN per foreground class/region (3 x K) of one batch, ignore label masked."""
        axes = [0, *range(2, logits.ndim)]
        if self.regions:
            mask = None
            if self.ignore_label is not None:
                mask, target = 1 - target[:, -1:].float(), target[:, :-1]
            pred = (torch.sigmoid(logits) > 0.5).float()
            gt = target.float()
        else:
            mask = (target != self.ignore_label).float() if self.ignore_label is not None else None
            pred = torch.zeros_like(logits).scatter_(1, logits.argmax(1, keepdim=True), 1)[:, 1:]
            clean = torch.where(target == (self.ignore_label or -1), 0, target).long()
            gt = torch.zeros_like(logits).scatter_(1, clean, 1)[:, 1:]
        if mask is not None:
            pred, gt = pred * mask, gt * mask
        tp = (pred * gt).sum(axes)
        return torch.stack([tp, (pred * (1 - gt)).sum(axes), ((1 - pred) * gt).sum(axes)])


def target_pyramid(target: torch.Tensor, scales) -> list[torch.Tensor]:
    """The label map at each deep-supervision resolution (nearest-exact), highest first."""
    out = []
    for scale in scales:
        if all(s == 1 for s in scale):
            out.append(target)
        else:
            size = [scaled_size(n, s) for n, s in zip(target.shape[2:], scale, strict=True)]
            out.append(nn.functional.interpolate(target.float(), size=size, mode="nearest-exact").to(target.dtype))
    return out
