import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import blob_case, write_raw_dataset

from segflow.convert import convert_case, convert_dataset_json
from segflow.crop import crop_case
from segflow.dataset import discover
from segflow.demo import _write_msd_image, generate
from segflow.errors import InputError
from segflow.io import load_json, read_image, save_json, write_image
from segflow.verify import verify_case, write_report


def test_4d_msd_image_is_split_keeping_geometry(tmp_path):
    image = np.random.default_rng(0).normal(size=(2, 5, 6, 7)).astype(np.float32)
    spacing, origin = [3.0, 0.8, 0.7], [10.0, -20.0, 5.0]
    direction = [0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    _write_msd_image(image, spacing, origin, direction, tmp_path / "case.nii.gz")
    label = sitk.GetImageFromArray(np.zeros((5, 6, 7), np.uint8))
    sitk.WriteImage(label, str(tmp_path / "label.nii.gz"))
    outs = [tmp_path / "out" / f"case_{c:04d}.nii.gz" for c in range(2)]
    convert_case("case", tmp_path / "case.nii.gz", tmp_path / "label.nii.gz", outs, tmp_path / "out" / "case.nii.gz")
    for c, out in enumerate(outs):
        array, sp, geometry = read_image(out)
        np.testing.assert_array_equal(array, image[c])
        assert sp == pytest.approx(spacing)
        assert geometry["origin"] == pytest.approx(origin) and geometry["direction"] == pytest.approx(direction)
    with pytest.raises(InputError, match="holds 2 channel"):
        convert_case("case", tmp_path / "case.nii.gz", tmp_path / "label.nii.gz", outs[:1], tmp_path / "x.nii.gz")


def test_msd_discovery_ignores_macos_junk_and_converts_dataset_json(tmp_path):
    generate(tmp_path, cases=5, test_cases=0, channels=2)
    (tmp_path / "imagesTr" / "._demo_000.nii.gz").write_bytes(b"\x00junk")
    dataset = discover(tmp_path)
    assert dataset.kind == "msd" and dataset.cases == [f"demo_{i:03d}" for i in range(5)]
    assert dataset.dataset_json["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert dataset.dataset_json["channel_names"] == {"0": "T1", "1": "T2"}
    convert_dataset_json(tmp_path / "dataset.json", tmp_path / "v2.json")
    v2 = json.loads((tmp_path / "v2.json").read_text())
    assert v2["file_ending"] == ".nii.gz" and "training" not in v2 and "modality" not in v2


def test_demo_is_deterministic(tmp_path):
    generate(tmp_path / "a", cases=5, test_cases=1)
    generate(tmp_path / "b", cases=5, test_cases=1)
    for name in ("imagesTr/demo_003.nii.gz", "labelsTr/demo_003.nii.gz", "imagesTs/demo_500.nii.gz"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a" / name)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b" / name)))
        np.testing.assert_array_equal(a, b)


def test_discovery_errors_name_the_problem(tmp_path):
    write_raw_dataset(tmp_path, n_cases=5)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    save_json({**meta, "numTraining": 7}, tmp_path / "dataset.json")
    with pytest.raises(InputError, match="numTraining is 7 but imagesTr holds 5"):
        discover(tmp_path)
    save_json(meta, tmp_path / "dataset.json")
    (tmp_path / "labelsTr" / "case_002.nii.gz").unlink()
    with pytest.raises(InputError, match="case 'case_002'.*no label file"):
        discover(tmp_path)


def test_raw_folder_in_mha_is_verified_and_cropped(tmp_path):
    root = tmp_path / "Dataset010_Mha"
    geometry = {"spacing": [1.0, 1.0, 2.0], "origin": [0.0, 0.0, 0.0], "direction": list(np.eye(3).ravel())}
    for i in range(5):
        image, label = blob_case(i)
        write_image(image[0], geometry, root / "imagesTr" / f"c{i}_0000.mha")
        label_geometry = dict(geometry, origin=[5.0, 0.0, 0.0]) if i == 2 else geometry
        write_image(label, label_geometry, root / "labelsTr" / f"c{i}.mha")
    labels = {"background": 0, "outer": 1, "inner": 2}
    save_json(
        {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 5, "file_ending": ".mha"}, root / "dataset.json"
    )
    dataset = discover(root)
    assert dataset.kind == "raw" and dataset.cases == [f"c{i}" for i in range(5)]
    records = []
    for case in dataset.cases:
        record = verify_case(case, dataset.sources[case], dataset.label_sources[case], dataset.dataset_json)
        assert record["spacing"] == [2.0, 1.0, 1.0] and record["labels_found"] == [0, 1, 2]
        save_json(record, tmp_path / f"{case}.json")
        records.append(tmp_path / f"{case}.json")
    # An origin mismatch between image and label is a warning, gathered in the report, not an error.
    write_report(records, tmp_path / "report.json")
    report = load_json(tmp_path / "report.json")
    assert report["num_warnings"] == 1 and "'c2'" in report["warnings"][0] and "origin" in report["warnings"][0]
    crop_case("c0", dataset.sources["c0"], dataset.label_sources["c0"], tmp_path / "crop.json", tmp_path / "fg.npy")
    assert load_json(tmp_path / "crop.json")["spacing"] == [2.0, 1.0, 1.0]
