"""Per-case integrity checks of the raw data (method reference §1.5).

Errors stop the workflow with an InputError naming the file, the case and the fix: unreadable file, NaN
or infinity in an image or the label map, label values with fractions, image/label shape or spacing
mismatch, channels that disagree in shape or spacing, a wrong number of channels, label values that
dataset.json does not declare. Origin and direction mismatches and empty label maps are only warnings
(nnU-Net also only warns on geometry); they are written to the case's verification record and gathered
into ``verify_report.json``.

Output format, ``verify/{case}.json``::

    {"case": ..., "shape": [z, y, x], "spacing": [z, y, x], "labels_found": [0, 1, ...],
     "warnings": ["...", ...]}
"""

from __future__ import annotations

import math

import numpy as np

from segflow.dataset import label_values
from segflow.errors import InputError
from segflow.io import load_json, nifti_contains_non_finite, read_case, read_image, save_json


def _check_finite(array, case, path, what) -> None:
    nifti = str(path).endswith((".nii", ".nii.gz"))
    if not np.isfinite(array).all() or (nifti and nifti_contains_non_finite(path, case)):
        raise InputError(
            f"contains NaN or infinite values in the {what}.",
            file=path,
            case=case,
            fix="replace those voxels (for example with the background value) or drop the case.",
        )


def _check_integer_labels(seg, case, path) -> None:
    fractional = seg[seg != np.round(seg)]
    if fractional.size:
        raise InputError(
            f"holds label values with fractions (e.g. {float(fractional[0]):g}); a label map holds whole numbers.",
            file=path,
            case=case,
            fix="re-export the label map with nearest-neighbour interpolation and an integer type.",
        )


def _geometry_warnings(case, image_geo, label_geo, label_file) -> list[str]:
    warnings = []
    for key in ("origin", "direction"):
        if not np.allclose(image_geo[key], label_geo[key], atol=1e-4):
            warnings.append(
                f"case {case!r}: the {key} of {label_file} ({label_geo[key]}) differs from the image's "
                f"({image_geo[key]}); check the overlay of image and label."
            )
    return warnings


def verify_case(case: str, image_files, label_file, dataset_json: dict) -> dict:
    """Check one case; return its verification record (with warnings) or raise an InputError."""
    expected_channels = len(dataset_json["channel_names"])
    if len(image_files) > expected_channels:
        raise InputError(
            f"has {len(image_files)} channel file(s); dataset.json declares {expected_channels}.",
            file=image_files[0],
            case=case,
            fix="provide one file per entry of channel_names.",
        )
    images = read_case(image_files, None, case)
    data, spacing, image_geo = images.data, images.spacing, images.geometry
    if len(data) != expected_channels:
        raise InputError(
            f"holds {len(data)} channel(s) in {len(image_files)} file(s) "
            f"({', '.join(str(n) for n in images.file_channels)} per file); dataset.json declares {expected_channels}.",
            file=image_files[0],
            case=case,
            fix="add the missing channel files (CASE_0001, ...) or make channel_names list the channels the files "
            "hold: an RGB image holds three (R, G, B), a grayscale one one.",
        )
    first = 0
    for path, count in zip(image_files, images.file_channels, strict=True):
        _check_finite(data[first : first + count], case, path, "image")
        first += count
    seg, label_spacing, label_geo = read_image(label_file, case)
    _check_finite(seg, case, label_file, "label map")
    _check_integer_labels(seg, case, label_file)
    if seg.shape != data.shape[1:]:
        raise InputError(
            f"has shape {list(seg.shape)} but the image {image_files[0]} has {list(data.shape[1:])}.",
            file=label_file,
            case=case,
            fix="the label map must lie on the image's voxel grid; resample or re-export it.",
        )
    if not np.allclose(label_spacing, spacing):
        raise InputError(
            f"has spacing {label_spacing} but the image {image_files[0]} has {spacing}.",
            file=label_file,
            case=case,
            fix="the label map must lie on the image's voxel grid; fix the header spacing or resample.",
        )
    found = sorted(int(v) for v in np.unique(seg))
    allowed = label_values(dataset_json)
    unexpected = [v for v in found if v not in allowed]
    if unexpected:
        raise InputError(
            f"contains label values {unexpected} that dataset.json does not declare (declared: {sorted(allowed)}).",
            file=label_file,
            case=case,
            fix="correct the label map, or add the labels to dataset.json.",
        )
    warnings = []
    for path, geo in zip(image_files[1:], images.channel_geometries[1:], strict=True):
        warnings += _geometry_warnings(case, image_geo, geo, path)
    warnings += _geometry_warnings(case, image_geo, label_geo, label_file)
    if found == [0]:
        warnings.append(
            f"case {case!r}: the label map {label_file} is empty (background only); the case trains as "
            "background, check that this is intended."
        )
    return {
        "case": case,
        "shape": list(data.shape[1:]),
        "spacing": spacing,
        "labels_found": found,
        "warnings": warnings,
    }


def verify_batch(cases, image_files, label_files, dataset_json_path, outputs) -> None:
    dataset_json = load_json(dataset_json_path)
    for case, images, label, out in zip(cases, image_files, label_files, outputs, strict=True):
        save_json(verify_case(case, images, label, dataset_json), out)


def write_report(records, path) -> None:
    """Gather the per-case records into one report: the number of cases, every warning, and the largest case
    (by voxels: the jobs that hold a whole case size their memory by it)."""
    records = [load_json(r) for r in records]
    warnings = [w for r in records for w in r["warnings"]]
    report = {"cases": len(records), "num_warnings": len(warnings), "warnings": warnings}
    if records:
        largest = max(records, key=lambda r: math.prod(r["shape"]))
        report["largest_case"] = {k: largest[k] for k in ("case", "shape", "spacing")}
    save_json(report, path)
