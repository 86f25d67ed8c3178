"""Postprocessing (method reference §8.1): keep only the largest connected component, decided on the
cross-validation results of the selected model.

Connectivity is full (26 neighbours in 3D). A step is ``{"labels": [...]}``: the voxels holding any of
these labels form one mask, all but its largest component become background. Determination, on the
cross-validation predictions of the winner:

* step A, the union of all foreground labels: accepted if the foreground-mean Dice rises strictly and no
  label's (or region's) mean Dice falls;
* step B, if there is more than one label or region: each one alone, in dataset.json order, applied on top
  of what was accepted so far; accepted if its own mean Dice rises strictly.

The accepted steps are stored as JSON in ``selection.json`` and applied in order at prediction time.
"""

from __future__ import annotations

import numpy as np

from segflow.evaluate import case_metrics, label_key, summarize


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of ``mask``; every component of that size when several tie (as
    nnunetv2 keeps them)."""
    from scipy import ndimage

    components, n = ndimage.label(mask, ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    if n <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return np.isin(components, np.flatnonzero(sizes == sizes.max()))


def keep_largest(segmentation: np.ndarray, labels) -> np.ndarray:
    """Background for every voxel of ``labels`` outside the largest component of their union."""
    mask = np.isin(segmentation, list(labels))
    out = segmentation.copy()
    out[mask & ~largest_component(mask)] = 0
    return out


def apply_postprocessing(segmentation: np.ndarray, steps) -> np.ndarray:
    for step in steps:
        segmentation = keep_largest(segmentation, step["labels"])
    return segmentation


def members(label) -> list[int]:
    return list(label) if isinstance(label, (list, tuple)) else [label]


def dice_means(cases, labels) -> dict:
    """Mean Dice per label key and the foreground mean over (reference, prediction, spacing) cases."""
    per_case = [{"metrics": case_metrics(ref, pred, labels, spacing, surfaces=False)} for ref, pred, spacing in cases]
    summary = summarize(per_case, labels)
    return {"foreground": summary["foreground_mean"]["Dice"], **{k: v["Dice"] for k, v in summary["mean"].items()}}


def determine_postprocessing(cases, labels) -> dict:
    """``cases``: (reference, prediction, spacing) arrays of the cross-validation; ``labels``: the evaluated
    labels or regions. Returns the accepted steps and the mean Dice before and after."""
    current = [pred for _, pred, _ in cases]

    def with_current(predictions):
        return [(ref, p, spacing) for (ref, _, spacing), p in zip(cases, predictions, strict=True)]

    before = dice_means(cases, labels)
    best = before
    steps = []
    union = sorted({v for label in labels for v in members(label)})
    candidate = [keep_largest(p, union) for p in current]
    scores = dice_means(with_current(candidate), labels)
    keys = [label_key(label) for label in labels]
    if scores["foreground"] > best["foreground"] and all(scores[k] >= best[k] for k in keys):
        steps.append({"labels": union})
        current, best = candidate, scores
    if len(labels) > 1:
        for label in labels:
            key = label_key(label)
            candidate = [keep_largest(p, members(label)) for p in current]
            scores = dice_means(with_current(candidate), labels)
            if scores[key] > best[key]:
                steps.append({"labels": members(label)})
                current, best = candidate, scores
    return {"steps": steps, "dice_before": before, "dice_after": best}
