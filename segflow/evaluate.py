"""Evaluation of segmentations against references (method reference §7).

Per case and per label (or region: the union of its labels), voxels where the reference holds the ignore
label left out:

* ``TP``, ``FP``, ``FN``, ``TN``, ``n_pred = TP + FP``, ``n_ref = TP + FN``;
* ``Dice = 2 TP / (2 TP + FP + FN)`` and ``IoU = TP / (TP + FP + FN)``, both NaN when reference and
  prediction are empty (nnU-Net's rule: such cases drop out of the means), 0 when only one of them is;
* ``HD95``: the 95th percentile of the distances (mm) from each border voxel of either mask to the nearest
  border voxel of the other (MedPy's definition; a border voxel has a face neighbour outside the mask), NaN
  when either mask is empty;
* ``NSD``: normalised surface Dice at the configured tolerance (mm), the share of both masks' border voxels
  within the tolerance of the other border; NaN when both are empty, 0 when one is.

``summary.json`` has nnU-Net v2's layout: ``metric_per_case`` (``metrics`` per label, ``prediction_file``,
``reference_file``), ``mean`` (per label, NaN-skipping mean over cases) and ``foreground_mean`` (plain mean
over labels of ``mean``). A per-case CSV holds the same rows as a table.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from segflow.errors import InputError
from segflow.io import read_image, save_json
from segflow.labels import has_regions, output_channels

METRICS = ("Dice", "IoU", "TP", "FP", "FN", "TN", "n_pred", "n_ref", "HD95", "NSD")
DEFAULT_TOLERANCE_MM = 1.0


def label_key(label) -> str:
    """summary.json key of a label (``"1"``) or region (``"(1, 2)"``)."""
    return str(tuple(label)) if isinstance(label, (list, tuple)) else str(label)


def evaluated_labels(labels: dict) -> list:
    """The labels (or regions) evaluated for a dataset.json ``labels``: every output but the background."""
    return output_channels(labels) if has_regions(labels) else [v for v in output_channels(labels) if v != 0]


def mask_of(seg: np.ndarray, label) -> np.ndarray:
    return np.isin(seg, label) if isinstance(label, (list, tuple)) else seg == label


# --- surface distances ------------------------------------------------------------------------------------


def border(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)


def surface_distances(reference: np.ndarray, prediction: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each border voxel of the prediction to the reference's border, and back. Both
    masks non-empty. Computed inside their joint bounding box, which holds every border voxel."""
    from scipy import ndimage

    both = reference | prediction
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(both))
    reference_border, prediction_border = border(reference[box]), border(prediction[box])
    to_reference = ndimage.distance_transform_edt(~reference_border, sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~prediction_border, sampling=spacing)
    return to_reference[prediction_border], to_prediction[reference_border]


def hd95_and_nsd(reference: np.ndarray, prediction: np.ndarray, spacing, tolerance: float) -> tuple[float, float]:
    ref_any, pred_any = bool(reference.any()), bool(prediction.any())
    if not ref_any and not pred_any:
        return math.nan, math.nan
    if not ref_any or not pred_any:
        return math.nan, 0.0
    pred_to_ref, ref_to_pred = surface_distances(reference, prediction, spacing)
    distances = np.concatenate([pred_to_ref, ref_to_pred])
    nsd = ((pred_to_ref <= tolerance).sum() + (ref_to_pred <= tolerance).sum()) / len(distances)
    return float(np.percentile(distances, 95)), float(nsd)


# --- one case -----------------------------------------------------------------------------------------


def label_metrics(
    reference, prediction, spacing, valid=None, tolerance: float = DEFAULT_TOLERANCE_MM, surfaces: bool = True
) -> dict:
    """All metrics of one binary reference/prediction pair; ``valid`` masks out ignored voxels. Without
    ``surfaces`` HD95 and NSD are left out (NaN), which saves the distance transforms."""
    if valid is not None:
        reference, prediction = reference & valid, prediction & valid
    tp = int((reference & prediction).sum())
    fp = int((~reference & prediction).sum())
    fn = int((reference & ~prediction).sum())
    total = int(valid.sum()) if valid is not None else reference.size
    tn = total - tp - fp - fn
    dice = math.nan if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    iou = math.nan if tp + fp + fn == 0 else tp / (tp + fp + fn)
    hd95, nsd = hd95_and_nsd(reference, prediction, spacing, tolerance) if surfaces else (math.nan, math.nan)
    return {
        "Dice": dice,
        "IoU": iou,
        "TP": tp,
        "FP": fp,
        "FN": fn,
        "TN": tn,
        "n_pred": tp + fp,
        "n_ref": tp + fn,
        "HD95": hd95,
        "NSD": nsd,
    }


def case_metrics(
    reference, prediction, labels, spacing, ignore_label=None, tolerance=DEFAULT_TOLERANCE_MM, surfaces: bool = True
) -> dict:
    """Metrics per label (or region) of one case: {label key: {metric: value}}."""
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} differs from prediction shape {prediction.shape}")
    valid = None if ignore_label is None else reference != ignore_label
    return {
        label_key(label): label_metrics(
            mask_of(reference, label), mask_of(prediction, label), spacing, valid, tolerance, surfaces
        )
        for label in labels
    }


# --- summaries ------------------------------------------------------------------------------------------


def summarize(per_case: list[dict], labels) -> dict:
    """nnU-Net's summary.json from ``[{"metrics": ..., "prediction_file": ..., "reference_file": ...}]``."""
    keys = [label_key(label) for label in labels]
    mean = {}
    for key in keys:
        mean[key] = {}
        for metric in METRICS:
            values = np.array([c["metrics"][key][metric] for c in per_case], dtype=np.float64)
            finite = values[~np.isnan(values)]
            mean[key][metric] = float(finite.mean()) if finite.size else math.nan
    foreground_mean = {metric: float(np.mean([mean[k][metric] for k in keys])) for metric in METRICS}
    return {"foreground_mean": foreground_mean, "mean": mean, "metric_per_case": per_case}


def per_case_table(summary: dict):
    import pandas as pd

    rows = []
    for case in summary["metric_per_case"]:
        name = Path(case["prediction_file"]).name
        for key, metrics in case["metrics"].items():
            rows.append({"case": name, "label": key, **metrics})
    return pd.DataFrame(rows, columns=["case", "label", *METRICS])


def write_summary(summary: dict, json_path, csv_path=None) -> None:
    save_json(summary, json_path)
    if csv_path is not None:
        from segflow.io import atomic_path

        with atomic_path(Path(csv_path)) as tmp:
            per_case_table(summary).to_csv(tmp, index=False)


def evaluate_pairs(pairs, labels, ignore_label=None, tolerance: float = DEFAULT_TOLERANCE_MM) -> dict:
    """Summary of (reference file, prediction file) pairs; spacing from the reference."""
    per_case = []
    for reference_file, prediction_file in pairs:
        reference, spacing, _ = read_image(reference_file)
        prediction, _, _ = read_image(prediction_file)
        metrics = case_metrics(reference, prediction, labels, spacing, ignore_label, tolerance)
        per_case.append(
            {"metrics": metrics, "prediction_file": str(prediction_file), "reference_file": str(reference_file)}
        )
    return summarize(per_case, labels)


def evaluate_into(pairs, labels: dict, out_dir, tolerance: float = DEFAULT_TOLERANCE_MM) -> None:
    """Evaluate (reference, prediction) pairs for a dataset.json ``labels`` (regions and ignore label
    included) into ``out_dir``: summary.json and per_case.csv."""
    summary = evaluate_pairs(pairs, evaluated_labels(labels), labels.get("ignore"), tolerance)
    write_summary(summary, Path(out_dir) / "summary.json", Path(out_dir) / "per_case.csv")


def evaluate_folder(reference_dir, prediction_dir, labels, file_ending: str, ignore_label=None, tolerance=1.0) -> dict:
    """Every prediction in ``prediction_dir`` against the reference of the same name (nnU-Net's "chill"
    mode: references without a prediction are skipped)."""
    for folder, what in ((reference_dir, "reference"), (prediction_dir, "prediction")):
        if not Path(folder).is_dir():
            raise InputError(f"is not a folder (the {what} folder).", file=folder, fix="check the path.")
    predictions = sorted(p for p in Path(prediction_dir).iterdir() if p.name.endswith(file_ending))
    if not predictions:
        raise InputError(
            f"holds no {file_ending} files.",
            file=prediction_dir,
            fix="point -pred at the segmentations, or give their ending with --file-ending.",
        )
    pairs = []
    for prediction in predictions:
        reference = Path(reference_dir) / prediction.name
        if not reference.is_file():
            raise InputError(
                f"is missing: the prediction {prediction} has no reference of the same name.",
                file=reference,
                case=prediction.name[: -len(file_ending)],
                fix="add the reference, or remove the prediction from the folder.",
            )
        pairs.append((reference, prediction))
    return evaluate_pairs(pairs, labels, ignore_label, tolerance)


def crossval_summary(fold_summaries, labels: dict, out_json, out_csv) -> None:
    """One summary over the validation cases of all folds (each case is in exactly one fold)."""
    from segflow.io import load_json

    per_case = [case for path in fold_summaries for case in load_json(path)["metric_per_case"]]
    names = [Path(c["prediction_file"]).name for c in per_case]
    if len(set(names)) != len(names):
        raise ValueError("a case appears in the validation of more than one fold; check splits.json")
    write_summary(summarize(per_case, evaluated_labels(labels)), out_json, out_csv)
