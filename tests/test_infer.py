"""Inference: tiles, Gaussian weights, and the geometry round trip of a prediction (an oracle model whose
logits are the one-hot ground truth must give back the label map, voxel for voxel, on the input's grid)."""

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

import segflow.export
from segflow.cli import inference_choices, parser, run_inference_settings
from segflow.export import (
    export_logits,
    export_prediction,
    probabilities_from_logits,
    resampling_of,
    segmentation_from_logits,
    segmentation_from_probabilities,
    write_segmentation,
)
from segflow.infer import (
    STEP_SIZE,
    Model,
    Predictor,
    SlidingWindow,
    gaussian_importance,
    load_model,
    padding_for,
    tile_slicers,
    tile_starts,
)
from segflow.io import load_json, read_case, write_image
from segflow.plans import PlanConfiguration
from segflow.preprocess import preprocess_arrays
from segflow.resample import axis_orders, resample, resampled_bands, resize

LABELS = {"background": 0, "a": 1, "b": 2}
DATASET_JSON = {"channel_names": {"0": "MR"}, "labels": LABELS, "file_ending": ".nii.gz"}


def test_tile_starts_follow_nnunet_step_rule():
    assert tile_starts(110, 64) == [0, 23, 46]  # method reference §6.4
    assert tile_starts(64, 64) == [0]
    assert tile_starts(65, 64) == [0, 1]
    assert tile_starts(160, 64) == [0, 32, 64, 96]


def test_tiles_cover_every_voxel_and_2d_patches_tile_each_slice():
    shape = (5, 70, 41)
    cover = np.zeros(shape, int)
    for s in tile_slicers(shape, [4, 32, 32]):
        cover[s] += 1
    assert cover.min() >= 1
    slicers = tile_slicers(shape, [32, 32])
    assert {s[0] for s in slicers} == set(range(5))
    assert len(slicers) == 5 * len(tile_starts(70, 32)) * len(tile_starts(41, 32))


def test_padding_centres_small_images():
    assert padding_for((3, 10, 40), [5, 16, 16]) == [(1, 1), (3, 3), (0, 0)]
    assert padding_for((7, 10, 40), [16, 16]) == [(0, 0), (3, 3), (0, 0)]


def test_gaussian_importance_map():
    g = gaussian_importance([9, 16, 12]).numpy()
    assert g.max() == pytest.approx(10.0)
    assert np.unravel_index(g.argmax(), g.shape) == (4, 8, 6)
    assert g.min() > 0
    np.testing.assert_allclose(g[4, 8, 1:6], g[4, 8, 7:12][::-1], rtol=1e-6)  # symmetric about the centre
    assert g[0, 0, 0] < g[4, 8, 6] / 100


def oblique_direction(angle=0.4):
    c, s = np.cos(angle), np.sin(angle)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return (rz @ rx).flatten().tolist()


def geometry_case(tmp_path):
    """A case whose coarse axis is the middle array axis (so the plan transposes), inside a zero border (so
    the crop is not the whole image), with an oblique direction and an offset origin."""
    shape = (26, 11, 30)  # z, y, x
    spacing = [0.8, 3.0, 0.7]  # z, y, x
    rng = np.random.default_rng(3)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (np.abs(grid[0]) < 0.8) & (np.abs(grid[1]) < 0.75) & (np.abs(grid[2]) < 0.9)
    image = np.where(body, rng.uniform(50, 100, shape), 0).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[((grid[0] - 0.2) ** 2 + grid[1] ** 2 + (grid[2] + 0.3) ** 2 < 0.3) & body] = 1
    label[((grid[0] + 0.3) ** 2 + (grid[2] - 0.4) ** 2 < 0.1) & body] = 2
    geometry = {"spacing": spacing[::-1], "origin": [12.5, -30.0, 7.25], "direction": oblique_direction()}
    write_image(image, geometry, tmp_path / "case_0000.nii.gz")
    write_image(label, geometry, tmp_path / "case.nii.gz")
    return label, spacing


def plans_for(spacing_transposed, patch, transpose):
    configuration = {
        "spacing": list(spacing_transposed),
        "patch_size": list(patch),
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
    }
    return {
        "transpose_forward": list(transpose),
        "transpose_backward": [list(transpose).index(i) for i in range(3)],
        "configurations": {
            "3d_fullres": {**configuration, "data_identifier": "nnUNetPlans_3d_fullres"},
            "2d": {
                **configuration,
                "data_identifier": "nnUNetPlans_2d",
                "spacing": spacing_transposed[1:],
                "patch_size": list(patch[1:]),
            },
        },
        "foreground_intensity_properties_per_channel": {"0": {}},
    }


def oracle_logits(seg: np.ndarray) -> np.ndarray:
    """One-hot of a preprocessed label map (-1 counts as background), scaled like confident logits."""
    clean = np.where(seg[0] < 0, 0, seg[0])
    return np.stack([(clean == k) for k in range(3)]).astype(np.float32) * 8


@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
def test_oracle_prediction_returns_the_label_map_on_the_input_grid(tmp_path, configuration):
    label, spacing = geometry_case(tmp_path)
    case = read_case([tmp_path / "case_0000.nii.gz"], tmp_path / "case.nii.gz", "case")
    transpose = [1, 0, 2]
    plans = plans_for([spacing[a] for a in transpose], [8, 16, 16], transpose)
    data, seg, properties = preprocess_arrays(
        case.data, case.seg, case.spacing, PlanConfiguration.of(plans, configuration)
    )
    properties["geometry"] = case.geometry
    assert data.shape[1] < 8 and data.shape[1:] != label.shape, "the case must be transposed, cropped and padded"
    model = Model(
        PlanConfiguration.of(plans, configuration),
        DATASET_JSON,
        [{}],
        (0, 1, 2) if configuration == "3d_fullres" else (0, 1),
    )
    predictor = Predictor(model, "cpu", network=nn.Identity())
    oracle = oracle_logits(seg)
    logits = predictor.predict(oracle)
    np.testing.assert_allclose(logits, oracle, atol=1e-4)
    probabilities, segmentation = export_logits(
        logits, properties, PlanConfiguration.of(plans, configuration), DATASET_JSON
    )
    assert probabilities.shape == (3, *label.shape)
    np.testing.assert_allclose(probabilities.sum(0), 1, atol=1e-5)
    write_segmentation(segmentation, case.geometry, DATASET_JSON, tmp_path / "prediction.nii.gz")
    written = sitk.ReadImage(str(tmp_path / "prediction.nii.gz"))
    reference = sitk.ReadImage(str(tmp_path / "case.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), label)
    assert written.GetSpacing() == reference.GetSpacing()
    assert written.GetOrigin() == reference.GetOrigin()
    # NIfTI stores the rotation as a float32 quaternion: a second write of a direction read from NIfTI moves
    # it by ~1e-8 (SimpleITK, nnU-Net alike), far below any geometric meaning.
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-6)
    assert sitk.GetArrayFromImage(written).dtype == np.uint8


def test_resampled_prediction_lands_on_the_original_grid(tmp_path):
    """With a plan spacing twice as coarse in-plane, the oracle's logits live on a smaller grid; the export
    resamples them back and the label map still matches the input almost everywhere."""
    label, spacing = geometry_case(tmp_path)
    case = read_case([tmp_path / "case_0000.nii.gz"], tmp_path / "case.nii.gz", "case")
    transpose = [1, 0, 2]
    coarse = [spacing[1], spacing[0] * 2, spacing[2] * 2]
    plans = plans_for(coarse, [8, 16, 16], transpose)
    data, seg, properties = preprocess_arrays(
        case.data, case.seg, case.spacing, PlanConfiguration.of(plans, "3d_fullres")
    )
    assert data.shape[2] < label.shape[0] * 0.6
    _, segmentation = export_logits(
        oracle_logits(seg), properties, PlanConfiguration.of(plans, "3d_fullres"), DATASET_JSON
    )
    assert segmentation.shape == label.shape
    for k in (1, 2):
        overlap = 2 * ((segmentation == k) & (label == k)).sum() / ((segmentation == k).sum() + (label == k).sum())
        assert overlap > 0.9


def test_regions_are_painted_in_regions_class_order():
    dataset_json = {
        "labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3},
        "regions_class_order": [1, 2, 3],
    }
    probabilities = np.zeros((3, 1, 1, 4), np.float32)
    probabilities[0, ..., 1:] = 0.9  # whole tumour in voxels 1-3
    probabilities[1, ..., 2:] = 0.8  # core in 2-3
    probabilities[2, ..., 3] = 0.7  # enhancing in 3
    np.testing.assert_array_equal(segmentation_from_probabilities(probabilities, dataset_json)[0, 0], [0, 1, 2, 3])


def test_label_maps_are_the_argmax_of_probabilities_or_of_logits():
    """The channel-by-channel argmax equals numpy's (ties go to the first channel), and taking it from the
    logits, as an export without probabilities does, gives the probabilities' label map; so do regions."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, 6, 7, 8)).astype(np.float32)
    logits[2, 0] = logits[1, 0]  # exact ties between labels 1 and 2 on a whole slice
    probabilities = probabilities_from_logits(logits, regions=False)
    expected = np.array([0, 1, 2])[probabilities.argmax(0)]
    np.testing.assert_array_equal(segmentation_from_probabilities(probabilities, DATASET_JSON), expected)
    np.testing.assert_array_equal(segmentation_from_logits(logits, DATASET_JSON), expected)
    assert segmentation_from_logits(logits, DATASET_JSON).dtype == np.uint8
    assert (segmentation_from_logits(logits, DATASET_JSON)[0] != 2).all()
    regions = {"labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2]}
    sigmoid = probabilities_from_logits(logits[:2], regions=True)
    np.testing.assert_array_equal(
        segmentation_from_logits(logits[:2], regions), segmentation_from_probabilities(sigmoid, regions)
    )


def test_export_without_probabilities_writes_the_same_label_map(tmp_path):
    """Validation without probabilities (the default unless ensembles are selected) skips the C x image arrays
    but writes the label map the export with probabilities writes, in the same geometry."""
    label, spacing = geometry_case(tmp_path)
    case = read_case([tmp_path / "case_0000.nii.gz"], tmp_path / "case.nii.gz", "case")
    transpose = [1, 0, 2]
    plans = plans_for([spacing[1], spacing[0] * 2, spacing[2] * 2], [8, 16, 16], transpose)
    _, seg, properties = preprocess_arrays(case.data, case.seg, case.spacing, PlanConfiguration.of(plans, "3d_fullres"))
    properties["geometry"] = case.geometry
    logits = oracle_logits(seg) + np.random.default_rng(1).normal(0, 2, seg.shape).astype(np.float32)
    before = logits.copy()
    export_prediction(
        logits, properties, PlanConfiguration.of(plans, "3d_fullres"), DATASET_JSON, tmp_path / "a.nii.gz"
    )
    export_prediction(
        logits,
        properties,
        PlanConfiguration.of(plans, "3d_fullres"),
        DATASET_JSON,
        tmp_path / "b.nii.gz",
        tmp_path / "b.npz",
    )
    np.testing.assert_array_equal(logits, before)
    first, second = (sitk.ReadImage(str(tmp_path / f"{n}.nii.gz")) for n in "ab")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(first), sitk.GetArrayFromImage(second))
    assert first.GetSpacing() == second.GetSpacing() and first.GetOrigin() == second.GetOrigin()
    probabilities, _ = export_logits(logits, properties, PlanConfiguration.of(plans, "3d_fullres"), DATASET_JSON)
    with np.load(tmp_path / "b.npz") as saved:
        np.testing.assert_array_equal(saved["probabilities"], probabilities)
    assert not (tmp_path / "a.npz").exists()


def test_a_step_of_a_whole_patch_predicts_with_fewer_tiles_and_still_covers_the_image():
    """nnU-Net's -step_size: tiles advance by ``step`` patches. An identity network returns its input from any
    tiling, so both steps give the image back; step 1 runs ceil(size / patch) tiles per axis instead of 0.5's."""

    class CountingIdentity(nn.Module):
        tiles = 0

        def forward(self, x):
            CountingIdentity.tiles += 1
            return x

    plans = plans_for([1.0, 1.0, 1.0], [4, 8, 8], [0, 1, 2])
    model = Model(PlanConfiguration.of(plans, "3d_fullres"), DATASET_JSON, [{}], ())
    data = np.random.default_rng(0).normal(size=(3, 9, 20, 16)).astype(np.float32)
    tiles = {}
    for step in (0.5, 1.0):
        CountingIdentity.tiles = 0
        logits = Predictor(model, "cpu", SlidingWindow(step=step), network=CountingIdentity()).predict(data)
        np.testing.assert_allclose(logits, data, atol=1e-5)
        tiles[step] = CountingIdentity.tiles
    assert tiles == {0.5: 4 * 4 * 3, 1.0: 3 * 3 * 2}
    # segflow predict's default step is a literal (the command line does not import torch).
    arguments = parser().parse_args(["predict", "-i", "in", "-o", "out", "-m", "model"])
    assert inference_choices(arguments, {})[1] == STEP_SIZE


def test_segflow_predict_does_what_the_runs_predict_jobs_did_unless_told_otherwise(tmp_path):
    """On a workflow's results folder, segflow predict takes the run's inference threads, step and mirroring
    (its config.yaml) as its defaults, so that it costs what the run's predict jobs cost; options win."""
    (tmp_path / "config.yaml").write_text("inference:\n  threads: 1\n  step_size: 0.7\n  mirror: false\n")
    run = run_inference_settings(tmp_path)

    def choices(*options):
        return inference_choices(parser().parse_args(["predict", "-i", "in", "-o", "out", "-m", "m", *options]), run)

    assert choices() == (1, 0.7, False)
    assert choices("--threads", "3", "--step-size", "0.5") == (3, 0.5, False)
    assert run_inference_settings(tmp_path / "elsewhere") == {}
    plain = parser().parse_args(["predict", "-i", "in", "-o", "out", "-m", "m", "--disable-tta"])
    assert inference_choices(plain, {}) == (None, STEP_SIZE, False)
    with pytest.raises(SystemExit):
        parser().parse_args(["predict", "-i", "in", "-o", "out", "-m", "m", "--threads", "0"])


def test_mirroring_averages_flipped_predictions():
    """A network that is not mirror-equivariant (it adds a ramp along x) gets the ramp averaged with its
    mirror image, and the channel it passes through unchanged keeps the image as it is (an asymmetric ramp):
    exactly what flipping the input, predicting and flipping back must give."""

    class Ramp(nn.Module):
        def forward(self, x):
            ramp = torch.linspace(0, 1, x.shape[-1])
            return torch.cat([x, x * 0 + ramp, x], 1)

    plans = plans_for([1.0, 1.0, 1.0], [4, 8, 8], [0, 1, 2])
    model = Model(PlanConfiguration.of(plans, "3d_fullres"), DATASET_JSON, [{}], (2,))
    data = np.broadcast_to(np.linspace(-1, 2, 8, dtype=np.float32), (1, 4, 8, 8)).copy()
    logits = Predictor(model, "cpu", network=Ramp()).predict(data)
    np.testing.assert_allclose(logits[1], 0.5, atol=1e-6)
    np.testing.assert_allclose(logits[0], data[0], atol=1e-6)


def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_inference_reads_a_checkpoints_network_weights_and_never_its_optimiser_state(demo_run, tmp_path):
    """Validation and prediction load fold checkpoints mapped: the optimiser's state (for AdamW twice the
    weights; here a 256 MB stand-in) is never read into memory. nnU-Net's older, non-zip checkpoints load too."""
    results = demo_run / "results" / "Task900_SegflowDemo"
    checkpoint = torch.load(results / "train" / "3d_fullres" / "fold_0" / "checkpoint_final.pt", weights_only=True)
    optimizer_state = {"state": {0: {"exp_avg": torch.ones(64 * 2**20)}}, "param_groups": []}
    torch.save({**checkpoint, "optimizer_state": optimizer_state}, tmp_path / "large.pt")
    torch.save(checkpoint, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    del optimizer_state
    plans, dataset_json = load_json(results / "plans.json"), load_json(results / "dataset.json")
    before = resident_mb()
    model = load_model(plans, dataset_json, "3d_fullres", [tmp_path / "large.pt"])
    weights = model.fold_weights[0]
    assert all(torch.equal(weights[k], v) for k, v in checkpoint["network_weights"].items())
    assert resident_mb() - before < 64
    legacy = load_model(plans, dataset_json, "3d_fullres", [tmp_path / "legacy.pt"]).fold_weights[0]
    assert all(torch.equal(legacy[k], v) for k, v in checkpoint["network_weights"].items())


# --- export on the inference device -------------------------------------------------------------------------

#: Original spacing, plan spacing (both transposed) and transpose of each export case: isotropic (linear on every
#: axis), anisotropic with the coarse axis kept (its order 0 leaves it as it is) and resampled (order 0: nearest
#: slices), and a transposed anisotropic one.
EXPORT_CASES = {
    "isotropic": ([1.0, 1.0, 1.0], [1.5, 1.3, 1.2], [0, 1, 2]),
    "anisotropic": ([4.0, 0.8, 0.8], [4.0, 1.2, 1.1], [0, 1, 2]),
    "anisotropic, slices resampled": ([5.0, 0.8, 0.7], [4.0, 1.0, 1.0], [0, 1, 2]),
    "transposed": ([5.0, 0.7, 0.9], [3.5, 1.0, 1.3], [1, 0, 2]),
}


def export_case(case: str, classes: int = 3, seed: int = 0):
    """Smooth random logits on a plan's grid (the last two channels tied on two rows) and the properties of the
    cropped case they came from."""
    spacing, plan_spacing, transpose = EXPORT_CASES[case]
    cropped = [20, 22, 23]
    preprocessed = [round(n * s / p) for n, s, p in zip(cropped, spacing, plan_spacing, strict=True)]
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 3, (classes, *[max(2, n // 3) for n in preprocessed])).astype(np.float32)
    logits = np.stack([resize(c, preprocessed, 1) for c in coarse]) + rng.normal(0, 0.3, (classes, *preprocessed))
    logits[-1, :2] = logits[-2, :2]  # exact ties, which the first of the two channels wins
    plans = plans_for(plan_spacing, [8, 16, 16], transpose)
    properties = {  # the crop's shapes and box on transposed axes, the spacing on the reader's
        "spacing": [spacing[transpose.index(a)] for a in range(3)],
        "shape_after_cropping_and_before_resampling": cropped,
        "shape_before_cropping": [n + 4 for n in cropped],
        "bbox_used_for_cropping": [[1, 1 + n] for n in cropped],
    }
    return logits.astype(np.float32), properties, plans


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_resampling_on_the_device_equals_scipys_within_float32_rounding(case):
    """Bands of rows (several, and bands of one row) resampled by torch give ``resample``'s values: both
    interpolate in float64 and round once to float32 (torch axis after axis, scipy all axes at once), so they
    differ by a unit in the last place at most: two of the largest logit's bound it."""
    logits, properties, plans = export_case(case)
    current, target, kwargs = resampling_of(properties, PlanConfiguration.of(plans, "3d_fullres"))
    shape = properties["shape_after_cropping_and_before_resampling"]
    expected = resample(logits, shape, current, target, **kwargs)
    orders = axis_orders(3, current, target, kwargs["order"], kwargs["order_z"], kwargs["force_separate_z"])
    assert orders == ([1, 1, 1] if case == "isotropic" else [0, 1, 1])
    for band_values in (1, 3 * 22 * 23 * 4, 1 << 24):
        bands = list(resampled_bands(logits, shape, orders, "cpu", band_values))
        assert len(bands) == {1: 20, 1 << 24: 1}.get(band_values, 5)
        resampled = np.concatenate([band.numpy() for _, band in bands], axis=1)
        assert [start for start, _ in bands] == list(np.cumsum([0] + [b.shape[1] for _, b in bands[:-1]]))
        np.testing.assert_allclose(resampled, expected, rtol=0, atol=2**-22 * np.abs(logits).max())


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_the_export_on_the_device_writes_scipys_label_map_and_probabilities(case, monkeypatch):
    """The whole export (resampling, probabilities, argmax, crop back, transpose) on the device against the same
    export in scipy (the path of other orders): label maps identical, with and without probabilities, for
    labels and regions; probabilities within 1e-6."""
    regions = {"labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2]}
    for dataset_json, classes in ((DATASET_JSON, 3), (regions, 2)):
        logits, properties, plans = export_case(case, classes, seed=1)
        on_device = [
            export_logits(logits, properties, PlanConfiguration.of(plans, "3d_fullres"), dataset_json, p)
            for p in (True, False)
        ]
        with monkeypatch.context() as patch:
            patch.setattr(segflow.export, "device_orders", lambda *args: None)
            in_scipy = [
                export_logits(logits, properties, PlanConfiguration.of(plans, "3d_fullres"), dataset_json, p)
                for p in (True, False)
            ]
        before_cropping = properties["shape_before_cropping"]
        assert on_device[0][1].shape == tuple(before_cropping[a] for a in plans["transpose_backward"])
        assert len(np.unique(on_device[0][1])) == len(dataset_json["labels"])  # every label occurs
        for (probabilities, segmentation), (expected_probabilities, expected) in zip(on_device, in_scipy, strict=True):
            np.testing.assert_array_equal(segmentation, expected)
            assert segmentation.dtype == expected.dtype
            if expected_probabilities is None:
                assert probabilities is None
            else:
                np.testing.assert_allclose(probabilities, expected_probabilities, rtol=0, atol=1e-6)
