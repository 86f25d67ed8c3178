"""Export (method reference §6): logits on the preprocessed grid back to the geometry of the original image,
as label maps and probabilities; what validation, prediction and the ensembles write.

Logits are resampled (order 1, separate z as in the plans) to the cropped shape, turned into
probabilities (softmax; sigmoid for regions) and a label map (argmax; regions painted in
``regions_class_order``), pasted into the bounding box of the crop, transposed back and written with the
input's spacing, origin and direction. nnU-Net's orders (0 and 1) run in torch on the inference device, a band
of rows at a time (segflow/resample.py): the label map never needs an array of all classes on the original
grid, and without probabilities it comes from the logits (the same argmax; a region's logit above 0). Other
orders run in scipy, the label map then from the logits resampled one channel at a time.

Only fresh logits need torch, which is imported there: an ensemble or a selection job, which reads
probabilities and label maps, starts without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.io import atomic_path, write_image
from segflow.labels import has_regions, output_channels
from segflow.plans import PlanConfiguration
from segflow.resample import DEVICE_ORDERS, axis_orders, resample, resampled_bands

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


def revert_preprocessing(array: np.ndarray, properties: dict, configuration: PlanConfiguration, fill=0) -> np.ndarray:
    """A (C x) cropped-shape array (transposed axes) -> (C x) original shape (reader axes): pasted into the crop's
    bounding box of an array filled with ``fill`` (a value, or one per channel), then transposed back (a view)."""
    spatial = len(properties["shape_before_cropping"])
    leading = array.shape[: array.ndim - spatial]
    full = np.empty((*leading, *properties["shape_before_cropping"]), dtype=array.dtype)
    full[...] = np.reshape(fill, (-1, *[1] * spatial)) if leading else fill
    box = tuple(slice(a, b) for a, b in properties["bbox_used_for_cropping"])
    full[(*[slice(None)] * len(leading), *box)] = array
    backward = [a + len(leading) for a in configuration.transpose_backward]
    return full.transpose([*range(len(leading)), *backward])


def resampling_of(properties: dict, configuration: PlanConfiguration) -> tuple[list[float], list[float], dict]:
    """(preprocessed grid's spacing, cropped case's spacing, the plans' probability resampling kwargs), axes
    transposed as the logits'."""
    spacing_transposed = [properties["spacing"][a] for a in configuration.transpose_forward]
    current = configuration.spacing
    if len(current) < len(spacing_transposed):
        current = [spacing_transposed[0], *current]
    return current, spacing_transposed, dict(configuration.probability_resampling)


def logits_on_cropped_grid(logits: np.ndarray, properties: dict, configuration: PlanConfiguration) -> np.ndarray:
    """Logits on the preprocessed grid resampled (the plans' probability resampling) to the cropped case's grid."""
    current, target, kwargs = resampling_of(properties, configuration)
    return resample(logits, properties["shape_after_cropping_and_before_resampling"], current, target, **kwargs)


def device_orders(properties: dict, configuration: PlanConfiguration) -> list[int] | None:
    """Per axis, the interpolation order of the logits' resampling when the inference device can do it (orders
    0 and 1, nnU-Net's for probabilities); None for other orders, which ``logits_on_cropped_grid`` does."""
    current, target, kwargs = resampling_of(properties, configuration)
    if kwargs.get("is_seg") or not {kwargs.get("order", 3), kwargs.get("order_z", 0)} <= set(DEVICE_ORDERS):
        return None
    return axis_orders(len(target), current, target, kwargs["order"], kwargs["order_z"], kwargs["force_separate_z"])


def labels_of_band(scores, dataset_json: dict, threshold: float):
    """``segmentation_from_scores`` of a C x ... tensor band: the argmax (first channel wins ties), or regions
    above ``threshold`` painted in ``regions_class_order``."""
    import torch

    labels = dataset_json["labels"]
    if has_regions(labels):
        segmentation = torch.zeros(scores.shape[1:], dtype=torch.int32, device=scores.device)
        for channel, value in enumerate(dataset_json["regions_class_order"]):
            segmentation[scores[channel] > threshold] = value
        return segmentation
    # Channel after channel, as segflow_from_scores: torch's argmax over a leading axis of a few channels takes
    # ten times as long on a CPU.
    values = output_channels(labels)
    segmentation = torch.full(scores.shape[1:], values[0], dtype=torch.int32, device=scores.device)
    best = scores[0].clone()
    for channel, value in enumerate(values[1:], start=1):
        better = scores[channel] > best
        segmentation[better] = value
        torch.maximum(best, scores[channel], out=best)
    return segmentation


def export_on_device(logits, properties, orders, dataset_json: dict, with_probabilities: bool, device):
    """``export_logits``'s arrays on the cropped grid, resampled, turned into probabilities and labels on
    ``device`` a band of rows at a time: (probabilities or None, label map)."""
    import torch

    shape = properties["shape_after_cropping_and_before_resampling"]
    regions = has_regions(dataset_json["labels"])
    segmentation = np.empty(shape, dtype=segmentation_dtype(dataset_json))
    probabilities = np.empty((len(logits), *shape), dtype=np.float32) if with_probabilities else None
    for start, band in resampled_bands(logits, shape, orders, device):
        rows = slice(start, start + band.shape[1])
        if with_probabilities:
            band = torch.sigmoid(band) if regions else torch.softmax(band, 0)
            probabilities[:, rows] = band.cpu().numpy()
        segmentation[rows] = labels_of_band(band, dataset_json, 0.5 if with_probabilities else 0.0).cpu().numpy()
    return probabilities, segmentation


def export_logits(
    logits: np.ndarray,
    properties: dict,
    configuration: PlanConfiguration,
    dataset_json: dict,
    with_probabilities: bool = True,
    device="cpu",
):
    """Logits on the preprocessed grid -> (probabilities C x original shape, or None without ``with_probabilities``;
    label map of the original shape). The logits are not changed. nnU-Net's linear resampling runs on ``device``
    (``export_on_device``): the label map comes a band of rows at a time, with no array of all classes on the
    original grid unless probabilities are asked for. Other resampling orders run in scipy, then without
    probabilities the label map comes from the logits resampled one channel at a time."""
    orders = device_orders(properties, configuration)
    if orders is not None:
        probabilities, segmentation = export_on_device(
            logits, properties, orders, dataset_json, with_probabilities, device
        )
    elif not with_probabilities:
        channels = (logits_on_cropped_grid(logits[c : c + 1], properties, configuration)[0] for c in range(len(logits)))
        probabilities, segmentation = None, segmentation_from_logits(channels, dataset_json)
    else:
        cropped = logits_on_cropped_grid(logits, properties, configuration)
        probabilities = probabilities_from_logits(cropped, has_regions(dataset_json["labels"]))
        del cropped
        segmentation = segmentation_from_probabilities(probabilities, dataset_json)
    segmentation = revert_preprocessing(segmentation, properties, configuration)
    if not with_probabilities:
        return None, segmentation
    # Outside the crop there is only background: probability 1 for the background channel of label models.
    regions = has_regions(dataset_json["labels"])
    outside = [0.0] * len(probabilities) if regions else [1.0] + [0.0] * (len(probabilities) - 1)
    return revert_preprocessing(probabilities, properties, configuration, outside), segmentation


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
    logits,
    properties: dict,
    configuration: PlanConfiguration,
    dataset_json: dict,
    path,
    probabilities_path=None,
    device="cpu",
) -> None:
    """Write a case's label map in its original geometry (and its probabilities, given ``probabilities_path``) from
    logits on the preprocessed grid: what validation does with each case."""
    with_probabilities = probabilities_path is not None
    probabilities, segmentation = export_logits(
        logits, properties, configuration, dataset_json, with_probabilities, device
    )
    write_segmentation(segmentation, properties["geometry"], dataset_json, path)
    if with_probabilities:
        save_probabilities(probabilities, probabilities_path)


def load_probabilities(path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        return archive["probabilities"]
