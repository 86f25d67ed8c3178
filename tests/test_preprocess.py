"""Normalisation, resampling and class locations on hand-made arrays with known answers."""

import numpy as np
import pytest
from scipy import ndimage

from segflow.crop import fill_holes
from segflow.plans import PlanConfiguration
from segflow.preprocess import class_locations, foreground_classes, preprocess_arrays
from segflow.resample import nearest_indices, resample, resize, resize_labels, separate_z_axis


def make_plans(spacing, schemes=("ZScoreNormalization",), use_mask=(False,), transpose=(0, 1, 2), ct=None):
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "spacing": list(spacing),
        "normalization_schemes": list(schemes),
        "use_mask_for_norm": list(use_mask),
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
    }
    return {
        "transpose_forward": list(transpose),
        "transpose_backward": [list(transpose).index(i) for i in range(3)],
        "configurations": {"3d_fullres": configuration},
        "foreground_intensity_properties_per_channel": {"0": ct or {}},
    }


def body_case(shape=(12, 40, 36), seed=0):
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(g**2 for g in grid)
    seg = np.zeros(shape, np.int16)
    seg[r2 < 0.5] = 1
    seg[r2 < 0.15] = 2
    image = np.where(r2 < 1.0, 100 + 50 * seg + rng.normal(0, 10, shape), 0).astype(np.float32)
    return image[None], seg[None]


def test_zscore_inside_the_mask_has_mean_0_and_std_1():
    data, seg = body_case()
    plans = make_plans([1.0, 1.0, 1.0], use_mask=(True,))
    out, out_seg, _ = preprocess_arrays(data, seg, [1.0, 1.0, 1.0], PlanConfiguration.of(plans, "3d_fullres"))
    inside = out_seg[0] >= 0
    assert (~inside).any(), "the crop must leave voxels outside the mask"
    assert out[0][inside].mean() == pytest.approx(0, abs=1e-5)
    assert out[0][inside].std() == pytest.approx(1, abs=1e-4)
    assert np.all(out[0][~inside] == 0)


def test_ct_normalisation_uses_the_fingerprint_values():
    data, seg = body_case()
    ct = {"mean": 130.0, "std": 20.0, "percentile_00_5": 95.0, "percentile_99_5": 180.0}
    plans = make_plans([1.0, 1.0, 1.0], schemes=("CTNormalization",), ct=ct)
    out, _, props = preprocess_arrays(data, seg, [1.0, 1.0, 1.0], PlanConfiguration.of(plans, "3d_fullres"))
    box = tuple(slice(a, b) for a, b in props["bbox_used_for_cropping"])
    expected = (np.clip(data[0][box], 95.0, 180.0) - 130.0) / 20.0
    np.testing.assert_allclose(out[0], expected, rtol=1e-6, atol=1e-6)


def test_anisotropic_case_comes_out_at_the_planned_spacing_and_shape():
    # Reader order (y, x, z) with z coarse; the plan transposes z first and resamples to 2.0 x 0.5 x 0.5.
    data, seg = body_case(shape=(40, 36, 12))
    spacing = [0.7, 0.7, 3.3]
    plans = make_plans([2.0, 0.5, 0.5], transpose=(2, 0, 1))
    out, out_seg, props = preprocess_arrays(
        data, seg, spacing, PlanConfiguration.of(plans, "3d_fullres"), {"background": 0, "a": 1, "b": 2}
    )
    cropped = props["shape_after_cropping_and_before_resampling"]
    expected = [round(cropped[0] * 3.3 / 2.0), round(cropped[1] * 0.7 / 0.5), round(cropped[2] * 0.7 / 0.5)]
    assert list(out.shape[1:]) == expected == list(out_seg.shape[1:])
    assert props["spacing_after_resampling"] == [2.0, 0.5, 0.5]
    assert separate_z_axis([3.3, 0.7, 0.7], [2.0, 0.5, 0.5]) == 0
    # Labels survive resampling: every label is still there, in about the same physical volume.
    assert set(np.unique(out_seg)) == {-1, 0, 1, 2}
    for label in (1, 2):
        before = (seg == label).sum() * 0.7 * 0.7 * 3.3
        after = (out_seg == label).sum() * 2.0 * 0.5 * 0.5
        assert after == pytest.approx(before, rel=0.15)
    assert set(props["class_locations"]) == {"1", "2"}


def test_resize_equals_skimage_resize():
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(1)
    image = rng.normal(size=(9, 17, 13))
    for order in (1, 3):
        ours = resize(image, (14, 11, 20), order)
        theirs = transform.resize(image, (14, 11, 20), order=order, mode="edge", anti_aliasing=False)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_resize_labels_equals_batchgenerators():
    from batchgenerators.augmentations.utils import resize_segmentation

    rng = np.random.default_rng(2)
    seg = ndimage.zoom(rng.integers(-1, 4, (6, 7, 5)), 3, order=0).astype(np.int16)
    for shape in [(20, 13, 11), (9, 30, 16), (36, 42, 30)]:
        np.testing.assert_array_equal(resize_labels(seg, shape, 1), resize_segmentation(seg, shape, 1))


def test_nearest_indices_equal_ndimage_order_0():
    for old, new in [(10, 20), (20, 10), (7, 13), (13, 7), (31, 47), (12, 12)]:
        volume = np.arange(old, dtype=np.float64)
        coords = (old / new * (np.arange(new) + 0.5) - 0.5)[None]
        expected = ndimage.map_coordinates(volume, coords, order=0, mode="nearest")
        np.testing.assert_array_equal(volume[nearest_indices(old, new)], expected)


def test_separate_z_resampling_keeps_slices_for_the_2d_style_target():
    data = np.random.default_rng(3).normal(size=(1, 5, 30, 30)).astype(np.float32)
    out = resample(data, [5, 20, 20], [4.0, 1.0, 1.0], [4.0, 1.5, 1.5])
    for z in range(5):
        np.testing.assert_allclose(out[0, z], resize(data[0, z], (20, 20), 3), rtol=1e-6)


def test_fill_holes_equals_scipy():
    rng = np.random.default_rng(4)
    for _ in range(10):
        mask = rng.random(tuple(rng.integers(4, 20, 3))) < 0.6
        np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_class_locations_sample_sizes_and_membership():
    seg = np.zeros((1, 40, 40, 40), np.int8)
    seg[0, :30, :30, :30] = 1  # 27 000 voxels -> 10 000 samples
    seg[0, 35:, 35:, 35:] = 2  # 125 voxels -> all of them
    locations = class_locations(seg, [1, 2, 3])
    assert len(locations["1"]) == 10_000 and len(locations["2"]) == 125 and locations["3"] == []
    assert all(seg[0, z, y, x] == 1 for z, y, x in locations["1"][:200])
    assert class_locations(seg, [1, 2, 3]) == locations
    big = np.ones((1, 120, 100, 100), np.int8)  # 1.2 M voxels -> 1 % = 12 000 samples
    assert len(class_locations(big, [1])["1"]) == 12_000


def test_foreground_classes_for_labels_regions_and_ignore():
    assert foreground_classes({"background": 0, "a": 1, "b": 2}) == [1, 2]
    assert foreground_classes({"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enh": 3}) == [(1, 2, 3), (2, 3), 3]
    assert foreground_classes({"background": 0, "a": 1, "ignore": 2}) == [1, (-1, 0, 1)]
