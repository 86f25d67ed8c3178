"""Export (method reference §6): logits on the preprocessed grid back to the geometry of the original image,
as label maps and probabilities; what validation, prediction and the ensembles write.

Logits are resampled (order 1, separate z as in the plans) to the cropped shape, turned into
probabilities (softmax; sigmoid for regions) and a label map (argmax; regions painted in
``regions_class_order``), pasted into the bounding box of the crop, transposed back and written with the
input's spacing, origin and direction. Where no probabilities are kept, the label map is taken from the
logits (the same argmax; a region's logit above 0), resampled one channel at a time, as nnunetv2 exports
then: a large case's export holds no array of all classes on its original grid.

Only a softmax or sigmoid of fresh logits needs torch, which is imported there: an ensemble or a selection job,
which reads probabilities and label maps, starts without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.io import atomic_path, write_image
from segflow.labels import has_regions, output_channels
from segflow.plan import resolved_configuration
from segflow.resample import resample

# --- labels -------------------------------------------------------------------------------------------


def probabilities_from_logits(logits: np.ndarray, regions: bool) -> np.ndarray:
    import torch

    tensor = torch.from_numpy(np.require(logits, np.float32, ["C", "W"]))
    return (torch.sigmoid(tensor) if regions else torch.softmax(tensor, 0)).numpy()


def segmentation_from_scores(scores, dataset_json: dict, region_threshold: float) -> np.ndarray:
    """Label map of C x ... scores (an array, or its channels one after the other, e.g. each resampled as it
    comes): the argmax (first channel wins ties, as ``np.argmax``) taken channel by channel, so that no int64
    or second C x ... array is made; regions are painted in ``regions_class_order`` where their score exceeds
    ``region_threshold``."""
    labels = dataset_json["labels"]
    regions = has_regions(labels)
    values = dataset_json.get("regions_class_order") if regions else output_channels(labels)
    if values is None:
        raise ValueError("dataset.json declares regions but no regions_class_order")
    segmentation = best = None
    for channel, score in enumerate(scores):
        if segmentation is None:
            first = 0 if regions else values[0]
            segmentation = np.full(score.shape, first, dtype=segmentation_dtype(dataset_json))
        if regions:
            segmentation[score > region_threshold] = values[channel]
        elif best is None:
            best = np.array(score)
        else:
            segmentation[score > best] = values[channel]
            np.maximum(best, score, out=best)
    return segmentation


def segmentation_from_probabilities(probabilities: np.ndarray, dataset_json: dict) -> np.ndarray:
    """Label map of C x ... probabilities: argmax, or regions (probability > 0.5) painted in ``regions_class_order``."""
    return segmentation_from_scores(probabilities, dataset_json, 0.5)


def segmentation_from_logits(logits: np.ndarray, dataset_json: dict) -> np.ndarray:
    """The label map of ``segmentation_from_probabilities`` without computing probabilities (softmax keeps the
    order, a sigmoid exceeds 0.5 where its logit exceeds 0), as nnunetv2 exports when it saves none."""
    return segmentation_from_scores(logits, dataset_json, 0.0)


def segmentation_dtype(dataset_json: dict):
    values = [v for v in dataset_json["labels"].values() if isinstance(v, int)]
    values += list(dataset_json.get("regions_class_order") or [])
    return np.uint8 if max(values, default=0) < 255 else np.uint16


# --- export -------------------------------------------------------------------------------------------


def revert_preprocessing(array: np.ndarray, properties: dict, plans: dict, fill=0) -> np.ndarray:
    """A (C x) cropped-shape array (transposed axes) -> (C x) original shape (reader axes): pasted into the crop's
    bounding box of an array filled with ``fill`` (a value, or one per channel), then transposed back (a view)."""
    spatial = len(properties["shape_before_cropping"])
    leading = array.shape[: array.ndim - spatial]
    full = np.empty((*leading, *properties["shape_before_cropping"]), dtype=array.dtype)
    full[...] = np.reshape(fill, (-1, *[1] * spatial)) if leading else fill
    box = tuple(slice(a, b) for a, b in properties["bbox_used_for_cropping"])
    full[(*[slice(None)] * len(leading), *box)] = array
    backward = [a + len(leading) for a in plans["transpose_backward"]]
    return full.transpose([*range(len(leading)), *backward])


def logits_on_cropped_grid(logits: np.ndarray, properties: dict, plans: dict, configuration_name: str) -> np.ndarray:
    """Logits on the preprocessed grid resampled (the plans' probability resampling) to the cropped case's grid."""
    configuration = resolved_configuration(plans, configuration_name)
    spacing_transposed = [properties["spacing"][a] for a in plans["transpose_forward"]]
    current = [float(s) for s in configuration["spacing"]]
    if len(current) < len(spacing_transposed):
        current = [spacing_transposed[0], *current]
    return resample(
        logits,
        properties["shape_after_cropping_and_before_resampling"],
        current,
        spacing_transposed,
        **configuration["resampling_fn_probabilities_kwargs"],
    )


def export_logits(
    logits: np.ndarray,
    properties: dict,
    plans: dict,
    configuration_name: str,
    dataset_json: dict,
    with_probabilities: bool = True,
):
    """Logits on the preprocessed grid -> (probabilities C x original shape, or None without ``with_probabilities``;
    label map of the original shape). The logits are not changed. Without probabilities the label map comes from
    the logits, resampled one channel at a time: a large CT's export then holds its logits, two channels on the
    original grid and the label map."""
    if not with_probabilities:
        channels = (
            logits_on_cropped_grid(logits[c : c + 1], properties, plans, configuration_name)[0]
            for c in range(len(logits))
        )
        segmentation = segmentation_from_logits(channels, dataset_json)
        return None, revert_preprocessing(segmentation, properties, plans)
    cropped = logits_on_cropped_grid(logits, properties, plans, configuration_name)
    regions = has_regions(dataset_json["labels"])
    probabilities = probabilities_from_logits(cropped, regions)
    del cropped
    segmentation = revert_preprocessing(segmentation_from_probabilities(probabilities, dataset_json), properties, plans)
    # Outside the crop there is only background: probability 1 for the background channel of label models.
    outside = [0.0] * len(probabilities) if regions else [1.0] + [0.0] * (len(probabilities) - 1)
    return revert_preprocessing(probabilities, properties, plans, outside), segmentation


def write_segmentation(segmentation: np.ndarray, geometry: dict, dataset_json: dict, path) -> None:
    """Write a z-y-x label map (a 1 x Y x X one for 2D inputs) with the input image's geometry."""
    array = segmentation.astype(segmentation_dtype(dataset_json))
    if len(geometry["spacing"]) == 2:
        array = array[0]
    write_image(array, geometry, path)


def save_probabilities(probabilities: np.ndarray, path) -> None:
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, probabilities=np.asarray(probabilities, dtype=np.float32))


def export_prediction(
    logits, properties: dict, plans: dict, configuration_name: str, dataset_json: dict, path, probabilities_path=None
) -> None:
    """Write a case's label map in its original geometry (and its probabilities, given ``probabilities_path``) from
    logits on the preprocessed grid: what validation does with each case."""
    with_probabilities = probabilities_path is not None
    probabilities, segmentation = export_logits(
        logits, properties, plans, configuration_name, dataset_json, with_probabilities
    )
    write_segmentation(segmentation, properties["geometry"], dataset_json, path)
    if with_probabilities:
        save_probabilities(probabilities, probabilities_path)


def load_probabilities(path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        return archive["probabilities"]
