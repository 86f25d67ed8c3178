"""The cascade's extra input (method reference §5.6 step 12, §9).

3d_cascade_fullres trains on the 3d_fullres data plus the 3d_lowres segmentation of each case (its
cross-validation prediction, resampled to the fullres grid), given to the network as one-hot channels of the
foreground labels. In training the previous segmentation is cropped and spatially augmented with the label
map (it is the second segmentation channel until then) and afterwards degraded at random (``augment.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def foreground_labels(labels: dict) -> list[int]:
    """The label values a previous stage's segmentation is one-hot encoded over (background and the ignore
    label excluded; regions contribute their member labels)."""
    from segflow.dataset import label_values

    ignore = labels.get("ignore")
    return sorted(v for v in label_values({"labels": labels}) if v != 0 and v != ignore)


def one_hot(segmentation: np.ndarray, labels) -> np.ndarray:
    """... label map -> len(labels) x ... float32 indicator channels."""
    return np.stack([segmentation == label for label in labels]).astype(np.float32)


def previous_stage_files(previous_stage: str | None, folders, cases) -> dict[str, Path]:
    """Case -> the previous stage's segmentation (``next_stage/{case}.npy`` in the previous configuration's
    validation folders) for a cascade configuration (its ``previous_stage``); empty for any other."""
    if not previous_stage:
        return {}
    found = {p.stem: p for folder in folders for p in (Path(folder) / "next_stage").glob("*.npy")}
    missing = [c for c in cases if c not in found]
    if missing:
        raise ValueError(
            f"{previous_stage} has no segmentation for {missing[:5]}: the cascade needs the "
            "cross-validation predictions of all five folds of the previous stage"
        )
    return found
