"""The cascade's extra input (method reference §5.6 step 12, §9).

3d_cascade_fullres trains on the 3d_fullres data plus the 3d_lowres segmentation of each case (its
cross-validation prediction, resampled to the fullres grid), given to the network as one-hot channels of the
foreground labels. The previous segmentation is cropped and spatially augmented with the label map (it is
the second channel of ``seg`` until then) and afterwards degraded at random, so the network learns to
correct it rather than copy it:

* with probability 0.4 per sample, each label's channel (in random order) with probability 0.4 is dilated,
  eroded, opened or closed with a ball of radius 1-8 voxels; voxels it gains leave the other channels;
* with probability 0.2 per sample, each label's channel loses one connected component (full connectivity)
  chosen at random among those smaller than 15 % of the patch.
"""

from __future__ import annotations

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform

BINARY_OPERATOR_P_SAMPLE = 0.4
BINARY_OPERATOR_P_LABEL = 0.4
STRUCTURE_RADIUS = (1, 8)
REMOVE_COMPONENT_P_SAMPLE = 0.2
REMOVE_COMPONENT_MAX_SHARE = 0.15


def foreground_labels(labels: dict) -> list[int]:
    """The label values a previous stage's segmentation is one-hot encoded over (background and the ignore
    label excluded; regions contribute their member labels)."""
    from segflow.dataset import label_values

    ignore = labels.get("ignore")
    return sorted(v for v in label_values({"labels": labels}) if v != 0 and v != ignore)


def one_hot(segmentation: np.ndarray, labels) -> np.ndarray:
    """... label map -> len(labels) x ... float32 indicator channels."""
    return np.stack([segmentation == label for label in labels]).astype(np.float32)


def ball(radius: int, dim: int) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(-radius, radius + 1)] * dim, indexing="ij")
    return sum(g**2 for g in grid) <= radius**2


class MoveSegAsOneHotToData(AbstractTransform):
    """The previous stage's segmentation (``seg`` channel 1) becomes one-hot data channels."""

    def __init__(self, labels):
        self.labels = list(labels)

    def __call__(self, **batch):
        seg = batch["seg"]
        encoded = np.stack([one_hot(s[1], self.labels) for s in seg])
        batch["data"] = np.concatenate([batch["data"], encoded.astype(batch["data"].dtype)], axis=1)
        batch["seg"] = seg[:, :1]
        return batch


class RandomBinaryOperator(AbstractTransform):
    """Random dilation / erosion / opening / closing of the one-hot channels ``channels`` (negative: counted
    from the end)."""

    def __init__(self, channels, p_per_sample=BINARY_OPERATOR_P_SAMPLE, p_per_label=BINARY_OPERATOR_P_LABEL):
        self.channels, self.p_per_sample, self.p_per_label = list(channels), p_per_sample, p_per_label

    def __call__(self, **batch):
        from scipy import ndimage

        operations = (ndimage.binary_dilation, ndimage.binary_erosion, ndimage.binary_closing, ndimage.binary_opening)
        data = batch["data"]
        for b in range(data.shape[0]):
            if np.random.uniform() >= self.p_per_sample:
                continue
            order = list(self.channels)
            np.random.shuffle(order)
            for c in order:
                if np.random.uniform() >= self.p_per_label:
                    continue
                operation = operations[np.random.randint(len(operations))]
                radius = int(np.random.randint(STRUCTURE_RADIUS[0], STRUCTURE_RADIUS[1] + 1))
                result = operation(data[b, c] > 0, ball(radius, data.ndim - 2))
                data[b, c] = result
                for other in order:
                    if other != c:
                        data[b, other][result] = 0
        return batch


class RemoveRandomComponent(AbstractTransform):
    """Delete one random small connected component from each of the one-hot channels ``channels``."""

    def __init__(self, channels, p_per_sample=REMOVE_COMPONENT_P_SAMPLE, max_share=REMOVE_COMPONENT_MAX_SHARE):
        self.channels, self.p_per_sample, self.max_share = list(channels), p_per_sample, max_share

    def __call__(self, **batch):
        from scipy import ndimage

        data = batch["data"]
        for b in range(data.shape[0]):
            if np.random.uniform() >= self.p_per_sample:
                continue
            for c in self.channels:
                mask = data[b, c] > 0
                components, n = ndimage.label(mask, ndimage.generate_binary_structure(mask.ndim, mask.ndim))
                if n == 0:
                    continue
                sizes = np.bincount(components.ravel())[1:]
                small = [i + 1 for i, size in enumerate(sizes) if size < mask.size * self.max_share]
                if small:
                    data[b, c][components == small[np.random.randint(len(small))]] = 0
        return batch


def cascade_training_transforms(labels) -> list:
    channels = list(range(-len(labels), 0))
    return [MoveSegAsOneHotToData(labels), RandomBinaryOperator(channels), RemoveRandomComponent(channels)]
