import json
import tracemalloc

import numpy as np
import pytest
from conftest import blob_case, write_case

from segflow.crop import bounding_box, crop_case, crop_to_nonzero
from segflow.fingerprint import build_fingerprint, intensity_properties


def test_weighted_statistics_equal_nnunet_style_sampling():
    rng = np.random.default_rng(0)
    cases = [rng.normal(100 + 10 * i, 20, size=(2, n)).astype(np.float32) for i, n in enumerate([500, 3, 1200])]
    num_samples = 4000
    props = intensity_properties(cases, num_samples)
    for channel in range(2):
        samples = []
        for fg in cases:  # nnU-Net: one RandomState(1234) per case, channels drawn in turn, with replacement
            rs = np.random.RandomState(1234)
            drawn = [rs.choice(fg[c], num_samples, replace=True) for c in range(2)]
            samples.append(drawn[channel])
        samples = np.concatenate(samples).astype(np.float64)
        got = props[str(channel)]
        assert got["mean"] == pytest.approx(samples.mean(), rel=1e-12)
        assert got["std"] == pytest.approx(samples.std(), rel=1e-9)
        assert got["min"] == samples.min() and got["max"] == samples.max()
        p005, p50, p995 = np.percentile(samples, [0.5, 50, 99.5])
        assert got["percentile_00_5"] == pytest.approx(p005, rel=1e-12)
        assert got["median"] == pytest.approx(p50, rel=1e-12)
        assert got["percentile_99_5"] == pytest.approx(p995, rel=1e-12)


@pytest.mark.slow
def test_the_sample_statistics_hold_one_case_and_the_drawn_voxels_not_every_case():
    """1 000 cases of 100 000 foreground voxels (400 MB in all) sampled 1 000 times each, as a 100 000-case
    dataset is by nnU-Net's 1e8 / N: the cases arrive one at a time, as the fingerprint job reads them, and
    only their drawn voxels stay (at most 1 000 per case, 8 MB with the counts; the statistics sort copies of
    them). Before, every case and a count per voxel stayed: 1.26 GB for 300 such cases besides the inputs."""
    rng = np.random.default_rng(1)

    def cases():
        for i in range(1_000):
            yield rng.normal(i % 7, 1.0, size=(1, 100_000)).astype(np.float32)

    tracemalloc.start()
    props = intensity_properties(cases(), num_samples=1_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MB"
    assert props["0"]["min"] < props["0"]["median"] < props["0"]["max"]


def test_crop_to_nonzero_by_hand():
    data = np.zeros((2, 6, 7, 8), np.float32)
    data[0, 1:4, 2:5, 3:7] = 1.0
    data[1, 2, 5, 7] = 3.0  # the second channel extends the box
    seg = np.zeros((1, 6, 7, 8), np.int16)
    seg[0, 2, 3, 4] = 1
    cropped, cseg, box = crop_to_nonzero(data, seg)
    assert box == [[1, 4], [2, 6], [3, 8]]
    assert cropped.shape == (2, 3, 4, 5)
    # Inside the box but outside the mask: -1; the labelled voxel keeps its label.
    assert cseg[0, 0, 3, 0] == -1 and cseg[0, 1, 1, 1] == 1 and cseg[0, 0, 0, 0] == 0
    assert bounding_box(np.zeros((3, 3), bool)) == [[0, 3], [0, 3]]


def test_crop_case_and_fingerprint_files(tmp_path):
    records, foregrounds = [], []
    for i in range(3):
        image, label = blob_case(i, channels=2)
        write_case(tmp_path, f"c{i}", image, label, spacing=(2.0, 1.0, 1.0))
        files = [tmp_path / "imagesTr" / f"c{i}_{c:04d}.nii.gz" for c in range(2)]
        records.append(tmp_path / f"c{i}.json")
        foregrounds.append(tmp_path / f"c{i}_fg.npy")
        crop_case(f"c{i}", files, tmp_path / "labelsTr" / f"c{i}.nii.gz", records[-1], foregrounds[-1])
        fg = np.load(foregrounds[-1])
        assert fg.shape == (2, int((label > 0).sum()))
    record = json.loads(records[0].read_text())
    assert record["spacing"] == [2.0, 1.0, 1.0] and 0 < record["relative_size"] < 1
    fingerprint = build_fingerprint(records, foregrounds)
    assert fingerprint["spacings"] == [[2.0, 1.0, 1.0]] * 3
    assert set(fingerprint["foreground_intensity_properties_per_channel"]) == {"0", "1"}
