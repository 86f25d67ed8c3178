"""segflow against what nnunetv2 2.8.1 computed on the same inputs (tests/data/nnunetv2/, written by
tests/nnunetv2_fixture/make_fixture.py in nnunetv2's own environment): fingerprint, plans, preprocessed arrays
and class locations of a small two-channel (CT + MR) anisotropic dataset; the augmentation pipelines and
the samples they produce under the same seeds; patch sampling with an ignore label and without one."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, load, run_snakemake

from segflow.io import save_json, save_npy
from segflow.preprocess import class_locations, foreground_classes
from segflow.train.augment import training_pipeline, validation_pipeline
from segflow.train.data import Case, PatchLoader
from segflow.train.patch_geometry import AugmentationSettings

sys.path.insert(0, str(REPO / "tests" / "nnunetv2_fixture"))
import parity_inputs as shared  # noqa: E402

FIXTURE = REPO / "tests" / "data" / "nnunetv2"
DATASET = "Dataset950_Parity"


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    """The workflow run to the preprocessed arrays on the fixture's raw dataset."""
    workdir = tmp_path_factory.mktemp("parity")
    raw = workdir / DATASET
    shutil.copytree(FIXTURE / "raw" / DATASET, raw)
    run_snakemake(workdir, config={"dataset": str(raw), "folds": "[]", "test_images": "null", "case_batches": 2})
    return workdir / "results" / DATASET


def assert_fingerprint_equals(ours: dict, theirs: dict) -> None:
    """segflow's fingerprint.json against nnunetv2's dataset_fingerprint.json of the same raw dataset."""
    assert ours["shapes_after_crop"] == theirs["shapes_after_crop"]
    np.testing.assert_allclose(ours["spacings"], theirs["spacings"], rtol=1e-12)
    assert ours["median_relative_size_after_cropping"] == pytest.approx(theirs["median_relative_size_after_cropping"])
    for channel, expected in theirs["foreground_intensity_properties_per_channel"].items():
        found = ours["foreground_intensity_properties_per_channel"][channel]
        for key, value in expected.items():
            assert found[key] == pytest.approx(value, rel=1e-6), (channel, key)


def assert_preprocessed_equals(folder, expected_folder, cases: int) -> None:
    """segflow's preprocessed arrays, crop properties and class locations of one configuration against
    nnunetv2's, exported by the fixture scripts (CASE.npz, CASE.json)."""
    names = sorted(p.stem for p in expected_folder.glob("*.npz"))
    assert len(names) == cases
    for case in names:
        with np.load(expected_folder / f"{case}.npz", allow_pickle=False) as npz:
            data, seg = npz["data"], npz["seg"]
        expected = load(expected_folder / f"{case}.json")
        ours = np.load(folder / f"{case}.npy", allow_pickle=False)
        ours_seg = np.load(folder / f"{case}_seg.npy", allow_pickle=False)
        properties = load(folder / f"{case}.json")
        assert ours.shape == data.shape, case
        np.testing.assert_allclose(ours, data, rtol=0, atol=1e-4, err_msg=case)
        np.testing.assert_array_equal(ours_seg, seg, err_msg=case)
        for key in ("shape_before_cropping", "bbox_used_for_cropping", "shape_after_cropping_and_before_resampling"):
            assert properties[key] == expected[key], (case, key)
        assert properties["class_locations"] == expected["class_locations"], case


@pytest.mark.slow
def test_fingerprint_equals_nnunetv2(preprocessed):
    ours, theirs = load(preprocessed / "fingerprint.json"), load(FIXTURE / "expected" / "dataset_fingerprint.json")
    assert_fingerprint_equals(ours, theirs)


def test_plans_equal_nnunetv2(preprocessed):
    ours, theirs = load(preprocessed / "plans.json"), load(FIXTURE / "expected" / "nnUNetPlans.json")
    assert set(ours["configurations"]) == set(theirs["configurations"]) == {"2d", "3d_fullres"}
    for name, configuration in theirs["configurations"].items():
        assert ours["configurations"][name] == configuration, name
    # The dataset exercises both normalisations and the non-zero mask.
    full = theirs["configurations"]["3d_fullres"]
    assert full["normalization_schemes"] == ["CTNormalization", "ZScoreNormalization"]
    assert full["use_mask_for_norm"] == [False, True]


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
def test_preprocessed_arrays_and_class_locations_equal_nnunetv2(preprocessed, configuration):
    expected_folder = FIXTURE / "expected" / configuration
    assert_preprocessed_equals(preprocessed / "preprocessed" / configuration, expected_folder, cases=5)


@pytest.mark.parametrize("name", list(shared.PIPELINES))
def test_augmentation_pipeline_equals_nnunetv2(name):
    """Same transforms, order, probabilities and ranges; same rotation range, dummy-2D decision, mirror axes
    and enlarged patch."""
    spec, expected = shared.PIPELINES[name], load(FIXTURE / "augmentation.json")[name]
    settings = AugmentationSettings(spec["patch"])
    assert list(settings.rotation) == pytest.approx(expected["rotation"])
    assert settings.dummy_2d == expected["dummy_2d"]
    assert settings.enlarged_patch == expected["enlarged_patch"]
    assert list(settings.mirror_axes) == expected["mirror_axes"]
    masked = [c for c, m in enumerate(spec["mask"]) if m]
    ours = json.loads(json.dumps(shared.describe(training_pipeline(settings, masked, spec["cascade"]))))
    assert ours == expected["training"]
    assert json.loads(json.dumps(shared.describe(validation_pipeline(spec["cascade"])))) == expected["validation"]


@pytest.mark.parametrize("name", [n for n, spec in shared.PIPELINES.items() if spec["samples"]])
def test_augmented_samples_equal_nnunetv2(name):
    """Same input, same numpy and torch seeds: the same augmented image and label map."""
    spec = shared.PIPELINES[name]
    settings = AugmentationSettings(spec["patch"])
    pipeline = training_pipeline(settings, [c for c, m in enumerate(spec["mask"]) if m], spec["cascade"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with np.load(FIXTURE / "augmented.npz", allow_pickle=False) as expected:
            for seed in shared.SAMPLE_SEEDS:
                image, seg = shared.augmentation_input(
                    len(spec["mask"]), settings.enlarged_patch, bool(spec["cascade"])
                )
                np.random.seed(seed)
                torch.manual_seed(seed)
                out = pipeline(image=image, segmentation=seg)
                np.testing.assert_allclose(out["image"].numpy(), expected[f"{name}/{seed}/image"], atol=1e-5)
                np.testing.assert_array_equal(out["segmentation"].numpy(), expected[f"{name}/{seed}/segmentation"])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(shared.SAMPLING))
def test_sampling_with_an_ignore_label_matches_nnunetv2(tmp_path, name):
    """Labels at the centres of 10 000 patches cut from a sparsely annotated map: other samples are centred
    on annotated voxels, forced ones on a foreground class (never the annotated class while one exists)."""
    expected = load(FIXTURE / "sampling.json")[name]
    patch = shared.SAMPLING[name]
    enlarged = AugmentationSettings(patch).enlarged_patch
    assert enlarged == expected["enlarged_patch"]
    seg = shared.ignore_label_map()
    save_npy(np.zeros((1, *seg.shape[1:]), np.float32), tmp_path / "case.npy")
    save_npy(seg, tmp_path / "case_seg.npy")
    save_json(
        {"class_locations": class_locations(seg, foreground_classes(shared.IGNORE_LABELS))}, tmp_path / "case.json"
    )
    loader = PatchLoader([Case(tmp_path, "case")], shared.SAMPLING_BATCH_SIZE, enlarged, patch, name == "2d")
    np.random.seed(shared.SAMPLING_SEED)
    batches = [
        loader.generate_train_batch()["seg"].numpy()
        for _ in range(shared.SAMPLING_PATCHES // shared.SAMPLING_BATCH_SIZE)
    ]
    ours = shared.centre_label_counts(batches, enlarged, shared.SAMPLING_BATCH_SIZE)
    for kind in ("forced", "other"):
        assert set(ours[kind]) == set(expected[kind]), kind
        for label, count in expected[kind].items():
            assert abs(ours[kind][label] - count) <= 0.05 * count, (kind, label, ours[kind], expected[kind])
    assert "3" not in ours["forced"] and "0" not in ours["forced"], "forced samples centre on labels 1 and 2"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(shared.SAMPLING))
def test_sampling_without_an_ignore_label_matches_nnunetv2(tmp_path, name):
    """Where 10 000 patches are cut from a map without an ignore label, read off a coordinate image: each axis's
    corners of the other samples (uniform over the allowed range, which reaches half the padding beyond the
    image) and of the forced ones (a stored foreground voxel at the centre, the corner clipped at the lowest
    allowed) as often as nnunetv2's loader cuts them."""
    expected = load(FIXTURE / "sampling.json")["without_ignore"][name]
    patch = shared.SAMPLING[name]
    enlarged = AugmentationSettings(patch).enlarged_patch
    assert enlarged == expected["enlarged_patch"]
    seg = shared.labelled_map()
    save_npy(shared.coordinate_image(seg.shape[1:]), tmp_path / "case.npy")
    save_npy(seg, tmp_path / "case_seg.npy")
    save_json({"class_locations": class_locations(seg, [1, 2])}, tmp_path / "case.json")
    loader = PatchLoader([Case(tmp_path, "case")], shared.SAMPLING_BATCH_SIZE, enlarged, patch, name == "2d")
    np.random.seed(shared.SAMPLING_SEED)
    batches = [
        loader.generate_train_batch()["data"].numpy()
        for _ in range(shared.SAMPLING_PATCHES // shared.SAMPLING_BATCH_SIZE)
    ]
    ours = shared.corner_counts(batches, shared.SAMPLING_BATCH_SIZE)
    for kind in ("forced", "other"):
        for axis, counts in expected[kind].items():
            assert set(ours[kind][axis]) == set(counts), (kind, axis, ours[kind][axis], counts)
            for corner, count in counts.items():
                assert abs(ours[kind][axis][corner] - count) <= 5 * np.sqrt(count), (kind, axis, corner)
