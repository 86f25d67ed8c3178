"""Natural 2D images as nnU-Net reads them (its NaturalImage2DIO): an RGB .png holds three channels in one file,
and its spacing is 1 x 1 whatever DPI the file states. segflow against what nnunetv2 2.8.1 computed on the same
dataset (tests/data/nnunetv2/natural/, written by tests/nnunetv2_fixture/make_natural_image_fixture.py):
fingerprint, plans, 2d arrays and class locations; then the rest of the workflow, to the test image's
segmentation written as a .png."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, load, run_snakemake
from PIL import Image
from test_nnunetv2_parity import assert_fingerprint_equals, assert_preprocessed_equals

from segflow.dataset import discover
from segflow.errors import InputError
from segflow.export import write_segmentation
from segflow.io import read_case, read_image, write_image
from segflow.verify import verify_case

FIXTURE = REPO / "tests" / "data" / "nnunetv2" / "natural"
DATASET = "Dataset951_RgbPng"
RAW = FIXTURE / "raw" / DATASET


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The whole workflow on the fixture's dataset: 2d, fold 0, a tiny budget, its test image predicted."""
    workdir = tmp_path_factory.mktemp("natural")
    shutil.copytree(RAW, workdir / DATASET)
    budget = "{epochs: 1, iterations_per_epoch: 2, val_iterations: 1}"
    config = {"dataset": str(workdir / DATASET), "folds": "[0]", "train": budget, "inference": "{mirror: false}"}
    config["case_batches"] = 2
    run_snakemake(workdir, config=config)
    return workdir / "results" / DATASET


def test_an_rgb_png_is_three_channels_at_spacing_one(tmp_path):
    image, label = RAW / "imagesTr" / "rgb_000_0000.png", RAW / "labelsTr" / "rgb_000.png"
    case = read_case([image], label, "rgb_000")
    picture = np.asarray(Image.open(image))  # H x W x 3
    assert case.data.shape == (3, 1, *picture.shape[:2]) and case.file_channels == [3]
    np.testing.assert_array_equal(case.data[:, 0], picture.transpose(2, 0, 1).astype(np.float32))
    assert case.spacing == [999.0, 1.0, 1.0] and case.geometry["spacing"] == [1.0, 1.0]
    np.testing.assert_array_equal(case.seg[0, 0], np.asarray(Image.open(label)))
    # A .tif's resolution becomes SimpleITK's spacing; nnU-Net reads natural images at 1 x 1 all the same.
    tif = tmp_path / "rgb_000_0000.tif"
    Image.open(image).save(tif, dpi=(300, 300))
    assert sitk.ReadImage(str(tif)).GetSpacing() == pytest.approx((25.4 / 300, 25.4 / 300))
    from_tif = read_case([tif], None, "rgb_000")
    assert from_tif.spacing == [999.0, 1.0, 1.0]
    np.testing.assert_array_equal(from_tif.data, case.data)


@pytest.mark.slow
def test_fingerprint_plans_and_arrays_equal_nnunetv2(results):
    expected = FIXTURE / "expected"
    assert_fingerprint_equals(load(results / "fingerprint.json"), load(expected / "dataset_fingerprint.json"))
    ours, theirs = load(results / "plans.json"), load(expected / "nnUNetPlans.json")
    assert set(ours["configurations"]) == set(theirs["configurations"]) == {"2d"}
    assert ours["configurations"]["2d"] == theirs["configurations"]["2d"]
    assert theirs["configurations"]["2d"]["spacing"] == [1.0, 1.0]
    assert_preprocessed_equals(results / "preprocessed" / "2d", expected / "2d", cases=6)


def test_the_test_image_is_segmented_as_a_png_of_its_size(results):
    picture = np.asarray(Image.open(RAW / "imagesTs" / "rgb_006_0000.png"))
    segmentation = np.asarray(Image.open(results / "predictions" / "rgb_006.png"))
    assert segmentation.shape == picture.shape[:2] and segmentation.dtype == np.uint8
    assert set(np.unique(segmentation)) <= {0, 1, 2}
    validation = results / "train" / "2d" / "fold_0" / "validation"
    assert sorted(p.suffix for p in validation.glob("rgb_*.png")) == [".png"] * len(
        load(results / "splits.json")[0]["val"]
    )
    assert (results / "report" / "overlays" / "test_rgb_006.png").is_file()


def test_channels_that_do_not_match_channel_names_name_the_case_and_the_fix(tmp_path):
    image, label = RAW / "imagesTr" / "rgb_001_0000.png", RAW / "labelsTr" / "rgb_001.png"
    dataset_json = load(RAW / "dataset.json")
    verify_case("rgb_001", [image], label, dataset_json)  # as declared: passes
    grayscale = {**dataset_json, "channel_names": {"0": "gray"}}
    with pytest.raises(InputError, match=r"holds 3 channel\(s\) in 1 file\(s\).*declares 1.*an RGB image holds three"):
        verify_case("rgb_001", [image], label, grayscale)
    rgb_label = tmp_path / "rgb_001.png"
    shutil.copy(image, rgb_label)
    with pytest.raises(InputError, match="has 3 components per pixel where one channel is expected") as error:
        read_image(rgb_label, "rgb_001")
    assert "rgb_001" in str(error.value) and "grayscale" in str(error.value)


@pytest.mark.parametrize("reader", ["NaturalImage2DIO", "SimpleITKIO", "Tiff3DIO"])
def test_the_readers_segflow_reproduces_may_be_named_in_dataset_json(tmp_path, reader):
    raw = tmp_path / DATASET
    shutil.copytree(RAW, raw)
    meta = load(raw / "dataset.json")
    (raw / "dataset.json").write_text(json.dumps({**meta, "overwrite_image_reader_writer": reader}))
    dataset = discover(raw)
    assert len(dataset.cases) == 6 and dataset.sources["rgb_000"] == [raw / "imagesTr" / "rgb_000_0000.png"]


def test_a_3d_tif_takes_its_spacing_from_case_json_as_tiff3dio_does(tmp_path):
    """nnunetv2 2.8.1 picks Tiff3DIO for a 3D .tif (NaturalImage2DIO refuses it): the spacing comes from
    CASE.json beside the images (CASE_XXXX.tif) and beside the label map (CASE.tif), whatever the .tif's own
    header says, and 1 x 1 x 1 without it; a segmentation written as .tif gets its CASE.json too."""
    images, labels = tmp_path / "imagesTr", tmp_path / "labelsTr"
    volume = np.arange(12 * 30 * 40, dtype=np.float32).reshape(12, 30, 40)
    header = {"spacing": [2.0, 2.0, 2.0], "origin": [0.0] * 3, "direction": list(np.eye(3).ravel())}
    write_image(volume, header, images / "stack_0000.tif")
    write_image((volume % 3).astype(np.uint8), header, labels / "stack.tif")
    assert read_case([images / "stack_0000.tif"], None, "stack").spacing == [1.0, 1.0, 1.0]
    (images / "stack.json").write_text(json.dumps({"spacing": [3.0, 0.5, 0.5]}))
    (labels / "stack.json").write_text(json.dumps({"spacing": [3.0, 0.5, 0.5]}))
    case = read_case([images / "stack_0000.tif"], labels / "stack.tif", "stack")
    assert case.data.shape == (1, 12, 30, 40) and case.spacing == [3.0, 0.5, 0.5]  # what nnunetv2 read
    np.testing.assert_array_equal(case.data[0], volume)
    assert case.geometry["spacing"] == [0.5, 0.5, 3.0] and read_image(labels / "stack.tif")[1] == [3.0, 0.5, 0.5]
    write_segmentation(case.seg[0], case.geometry, {"labels": {"background": 0, "a": 1, "b": 2}}, tmp_path / "out.tif")
    assert load(tmp_path / "out.json") == {"spacing": [3.0, 0.5, 0.5]}
    np.testing.assert_array_equal(read_image(tmp_path / "out.tif")[0], volume % 3)
    single = tmp_path / "single.tif"  # an image to predict given as one file (segflow predict): single.json
    write_image(volume, header, single)
    (tmp_path / "single.json").write_text(json.dumps({"spacing": [4.0, 1.0, 1.0]}))
    assert read_case([single], None, "single").spacing == [4.0, 1.0, 1.0]
    (images / "stack.json").write_text(json.dumps({"spacing": [3.0, 0.5]}))
    with pytest.raises(InputError, match=r"stack.json.*three numbers"):
        read_case([images / "stack_0000.tif"], None, "stack")
