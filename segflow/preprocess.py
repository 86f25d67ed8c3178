"""Preprocessing of one case for one configuration (method reference §4).

Order of operations, as nnU-Net v2: transpose (coarse axis first) -> crop to the non-zero box (label -1
outside the mask) -> normalise per channel -> resample to the configuration's spacing (2d keeps each case's
own slice spacing) -> sample class locations for foreground oversampling.

Output files per case, in ``preprocessed/{configuration}/``:

* ``{case}.npy``: C x Z x Y x X float32, the normalised, resampled image (memory-mappable);
* ``{case}_seg.npy``: 1 x Z x Y x X int8 (int16 when labels exceed 127), -1 outside the non-zero mask;
* ``{case}.json``: properties, everything needed to map a prediction back to the original image:
  ``spacing`` (original, reader order), ``geometry`` (SimpleITK spacing/origin/direction),
  ``shape_before_cropping``, ``bbox_used_for_cropping`` and ``shape_after_cropping_and_before_resampling``
  (transposed axis order), ``spacing_after_resampling`` and ``class_locations``: label (or region, as
  "(1, 2)") -> list of [z, y, x] voxel coordinates of the preprocessed array.
"""

from __future__ import annotations

import numpy as np

from segflow.crop import crop_to_nonzero
from segflow.io import load_json, read_case, save_json, save_npy
from segflow.labels import has_regions, plain_labels, regions
from segflow.plan import compute_new_shape
from segflow.plans import PlanConfiguration, resolved_configuration
from segflow.progress import Countdown
from segflow.resample import resample

CLASS_LOCATION_SAMPLES = 10_000
CLASS_LOCATION_MIN_FRACTION = 0.01
CLASS_LOCATION_SEED = 1234


# --- normalisation --------------------------------------------------------------------------------------


def _zscore(image, mask):
    if mask is None:
        mean, std = image.mean(), image.std()
        image -= mean
        image /= max(std, 1e-8)
    else:
        values = image[mask]
        image[mask] = (values - values.mean()) / max(values.std(), 1e-8)
    return image


def normalize_channel(image: np.ndarray, scheme: str, mask: np.ndarray | None, properties: dict | None):
    """Normalise one float32 channel in place by nnU-Net's scheme name (§4.2)."""
    if scheme == "ZScoreNormalization":
        return _zscore(image, mask)
    if scheme == "CTNormalization":
        np.clip(image, properties["percentile_00_5"], properties["percentile_99_5"], out=image)
        image -= properties["mean"]
        image /= max(properties["std"], 1e-8)
        return image
    if scheme == "NoNormalization":
        return image
    if scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= max(float(image.max()), 1e-8)
        return image
    if scheme == "RGBTo01Normalization":
        if image.min() < 0 or image.max() > 255:
            raise ValueError("RGB channels must lie in 0..255 for rgb_to_0_1 normalisation")
        image /= 255.0
        return image
    raise ValueError(f"unknown normalisation scheme {scheme!r}")


def normalize(data: np.ndarray, seg: np.ndarray, configuration: PlanConfiguration) -> np.ndarray:
    mask = seg[0] >= 0
    for c in range(data.shape[0]):
        normalize_channel(
            data[c],
            configuration.normalization_schemes[c],
            mask if configuration.use_mask_for_norm[c] else None,
            configuration.intensity_properties.get(str(c)),
        )
    return data


# --- class locations ------------------------------------------------------------------------------------


def foreground_classes(labels: dict) -> list:
    """What foreground oversampling samples: the foreground labels, or the regions when labels are regions;
    with an ignore label also "any annotated voxel" as (-1, every label)."""
    plain = plain_labels(labels)
    if has_regions(labels):
        classes = regions(labels)
    else:
        classes = sorted(v for k, v in plain.items() if k != "background")
    if "ignore" in labels:
        all_labels = sorted({x for v in plain.values() for x in (v if isinstance(v, (list, tuple)) else [v])})
        classes.append(tuple([-1, *all_labels]))
    return classes


def class_key(cls) -> str:
    return str(tuple(cls)) if isinstance(cls, tuple) else str(cls)


def class_locations(seg: np.ndarray, classes, seed: int = CLASS_LOCATION_SEED) -> dict[str, list]:
    """Per class, up to 10 000 voxel coordinates (at least 1 % of the class's voxels, however many that
    is), drawn without replacement by one RandomState(seed) class after class; empty classes get an empty
    list. As nnunetv2 2.8.1 draws them: the candidates of a class are its labels' voxels label by label, in
    the order the class lists them, each label's in array order, so the same seed picks the same voxels."""
    rng = np.random.RandomState(seed)
    members_of = {class_key(c): (c if isinstance(c, tuple) else (c,)) for c in classes}
    requested = sorted({int(m) for members in members_of.values() for m in members})
    mask = np.isin(seg, requested)
    coordinates, values = np.argwhere(mask), seg[mask]
    del mask
    order = np.argsort(values, kind="stable")
    coordinates, values = coordinates[order], values[order]
    present, starts, counts = np.unique(values, return_index=True, return_counts=True)
    blocks = {int(v): (int(start), int(size)) for v, start, size in zip(present, starts, counts, strict=True)}
    locations = {}
    for key, members in members_of.items():
        parts = [blocks[m] for m in members if m in blocks]
        if not parts:
            locations[key] = []
            continue
        sizes = np.array([size for _, size in parts])
        total = int(sizes.sum())
        n = max(min(CLASS_LOCATION_SAMPLES, total), int(np.ceil(total * CLASS_LOCATION_MIN_FRACTION)))
        offsets = rng.choice(total, n, replace=False)  # positions in the class's candidates, label by label
        ends = np.cumsum(sizes)
        part = np.searchsorted(ends, offsets, side="right")
        # candidate offset -> row of ``coordinates``: its label's block start, minus the candidates before it
        shift = np.array([start for start, _ in parts]) - (ends - sizes)
        locations[key] = coordinates[shift[part] + offsets][:, 1:].tolist()  # drop the channel column
    return locations


# --- one case -------------------------------------------------------------------------------------------


def target_spacing(configuration: PlanConfiguration, spacing_transposed) -> list[float]:
    """The configuration's spacing; 2d keeps the case's own spacing along the (first) slice axis."""
    spacing = configuration.spacing
    if len(spacing) == len(spacing_transposed) - 1:
        spacing = [float(spacing_transposed[0]), *spacing]
    return spacing


def properties_of(spacing, shape_before, box, shape_cropped, new_spacing) -> dict:
    return {
        "spacing": [float(s) for s in spacing],
        "shape_before_cropping": shape_before,
        "bbox_used_for_cropping": box,
        "shape_after_cropping_and_before_resampling": shape_cropped,
        "spacing_after_resampling": new_spacing,
    }


def preprocess_arrays(
    data: np.ndarray,
    seg: np.ndarray | None,
    spacing,
    configuration: PlanConfiguration,
    labels: dict | None = None,
    overwrite: bool = False,
):
    """Preprocess arrays already read from disk; returns (data, seg, properties without geometry). Without a
    label map (an image to predict) the returned seg is None. With ``overwrite`` the caller's float32 data may
    be normalised in place instead of copied (a large CT is then held once less)."""
    forward = configuration.transpose_forward
    has_labels = seg is not None
    data = data.transpose([0, *[a + 1 for a in forward]])
    data = np.asarray(data, dtype=np.float32) if overwrite else data.astype(np.float32)
    if seg is not None:
        seg = seg.transpose([0, *[a + 1 for a in forward]]).astype(np.int16)
    spacing_t = [spacing[a] for a in forward]
    shape_before = list(data.shape[1:])
    data, seg, box = crop_to_nonzero(data, seg)
    data = np.ascontiguousarray(data)
    shape_cropped = list(data.shape[1:])
    new_spacing = target_spacing(configuration, spacing_t)
    new_shape = compute_new_shape(shape_cropped, spacing_t, new_spacing)
    data = normalize(data, seg, configuration)
    properties = properties_of(spacing, shape_before, box, shape_cropped, new_spacing)
    if has_labels:  # before the image: the label map's resampling, the larger, then holds one image less
        seg = resample(seg, new_shape, spacing_t, new_spacing, **configuration.seg_resampling)
        if labels is not None:
            properties["class_locations"] = class_locations(seg, foreground_classes(labels))
        seg = seg.astype(np.int8 if seg.max() <= 127 else np.int16)
    else:  # an image to predict: its mask served normalisation and is not needed any more
        seg = None
    # The plans' resampling kwargs (is_seg, order, order_z, force_separate_z) are resample()'s keywords.
    data = resample(data, new_shape, spacing_t, new_spacing, **configuration.data_resampling)
    return data.astype(np.float32, copy=False), seg, properties


def preprocess_case(
    case: str,
    image_files,
    label_file,
    configuration: PlanConfiguration,
    labels: dict,
    out_data,
    out_seg,
    out_properties,
) -> None:
    images = read_case(image_files, label_file, case)
    data, seg, properties = preprocess_arrays(
        images.data, images.seg, images.spacing, configuration, labels, overwrite=True
    )
    save_npy(data, out_data)
    save_npy(seg, out_seg)
    save_json({"case": case, "geometry": images.geometry, **properties}, out_properties, indent=None)


def preprocess_batch(
    cases,
    image_files,
    label_files,
    plans_path,
    dataset_json_path,
    configuration_name,
    out_data,
    out_seg,
    out_properties,
) -> None:
    configuration = PlanConfiguration.of(load_json(plans_path), configuration_name)
    labels = load_json(dataset_json_path)["labels"]
    countdown = Countdown(f"preprocessing {configuration_name}: case", len(cases), interval=30)
    for i, case in enumerate(cases):
        preprocess_case(
            case,
            image_files[i],
            label_files[i],
            configuration,
            labels,
            out_data[i],
            out_seg[i],
            out_properties[i],
        )
        countdown.step(case)


def preprocessing_signature(plans: dict, configuration_name: str) -> dict:
    """The parts of the plans that determine a configuration's preprocessed data. The workflow reruns
    preprocessing when, and only when, this changes (a new batch size, say, changes nothing here)."""
    configuration = resolved_configuration(plans, configuration_name)
    keys = (
        "spacing",
        "normalization_schemes",
        "use_mask_for_norm",
        "resampling_fn_data_kwargs",
        "resampling_fn_seg_kwargs",
    )
    signature = {k: configuration[k] for k in keys}
    signature["transpose_forward"] = plans["transpose_forward"]
    ct_channels = [str(c) for c, s in enumerate(configuration["normalization_schemes"]) if s == "CTNormalization"]
    signature["ct_intensities"] = {c: plans["foreground_intensity_properties_per_channel"][c] for c in ct_channels}
    return signature
