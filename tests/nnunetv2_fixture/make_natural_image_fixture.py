"""Regenerate tests/data/nnunetv2/natural/, what nnunetv2 2.8.1 computes on a small dataset of natural 2D
images (RGB .png, read by its NaturalImage2DIO), for tests/test_natural_images.py. Run it with nnunetv2's own
Python:

    /path/to/nnunet-venv/bin/python tests/nnunetv2_fixture/make_natural_image_fixture.py

It writes:
* raw/Dataset951_RgbPng/: 6 RGB .png cases of different sizes (one file per case holds the three channels;
  each file says 300 DPI, which nnunetv2 ignores), some with a black border that cropping removes, labels 1
  and 2 as grayscale .png, and one test image in imagesTs;
* expected/: nnunetv2's dataset_fingerprint.json, nnUNetPlans.json, and per case its 2d preprocessed arrays
  (CASE.npz: data, seg) and properties with the class locations (CASE.json).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_fixture import export_preprocessed  # noqa: E402
from make_planner_fixture import nnunet_folders  # noqa: E402

OUT = HERE.parent / "data" / "nnunetv2" / "natural"
DATASET = "Dataset951_RgbPng"


def rgb_case(rng, shape, border: int) -> tuple[np.ndarray, np.ndarray]:
    """An H x W x 3 uint8 picture of two nested discs on a noisy background, black within ``border`` pixels of
    the edge, and its label map."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(0.35, 0.65) * shape[0], rng.uniform(0.35, 0.65) * shape[1]
    r2 = (yy - cy) ** 2 + (xx - cx) ** 2
    label = np.zeros(shape, np.uint8)
    label[r2 < (0.3 * min(shape)) ** 2] = 1
    label[r2 < (0.12 * min(shape)) ** 2] = 2
    base = np.stack([70 + 90 * (label == 1), 120 - 60 * (label == 2), 40 + 50 * label], -1).astype(float)
    picture = np.clip(base + rng.normal(0, 18, (*shape, 3)), 1, 255).astype(np.uint8)
    if border:
        picture[:border], picture[-border:], picture[:, :border], picture[:, -border:] = 0, 0, 0, 0
        label[:border], label[-border:], label[:, :border], label[:, -border:] = 0, 0, 0, 0
    return picture, label


def write_raw(raw: Path) -> None:
    from PIL import Image

    rng = np.random.RandomState(951)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (raw / sub).mkdir(parents=True)
    for number in range(7):
        shape = (int(rng.randint(40, 57)), int(rng.randint(48, 73)))
        picture, label = rgb_case(rng, shape, border=int(rng.choice([0, 0, 3, 5])))
        if number == 6:
            Image.fromarray(picture).save(raw / "imagesTs" / f"rgb_{number:03d}_0000.png", dpi=(300, 300))
            continue
        Image.fromarray(picture).save(raw / "imagesTr" / f"rgb_{number:03d}_0000.png", dpi=(300, 300))
        Image.fromarray(label).save(raw / "labelsTr" / f"rgb_{number:03d}.png", dpi=(300, 300))
    meta = {
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": {"background": 0, "ring": 1, "core": 2},
        "numTraining": 6,
        "file_ending": ".png",
        "name": "SegflowRgbPng",
    }
    (raw / "dataset.json").write_text(json.dumps(meta, indent=1))


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    write_raw(OUT / "raw" / DATASET)
    expected = OUT / "expected"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        env = {**nnunet_folders(base), "nnUNet_raw": str(OUT / "raw")}
        command = [str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", "951"]
        subprocess.run([*command, "-c", "2d", "-np", "1", "-npfp", "1"], env=env, check=True)
        theirs = base / "preprocessed" / DATASET
        expected.mkdir(parents=True)
        for name in ("dataset_fingerprint.json", "nnUNetPlans.json"):
            shutil.copy(theirs / name, expected / name)
        export_preprocessed(theirs / "nnUNetPlans_2d", expected / "2d")


if __name__ == "__main__":
    main()
