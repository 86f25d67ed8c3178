"""Benchmark: seconds to augment one training batch, nnunetv2's way against segflow's.

* nnunetv2 2.8.1's way: batchgeneratorsv2's pipeline, sample by sample, on one CPU thread (what each of its
  data-loading workers does), segflow's ``augment.py`` composition of it (equal to nnunetv2's, see
  tests/test_nnunetv2_parity.py);
* segflow's way: the parameters drawn per sample, the transforms applied to the whole batch on ``--device``
  with ``--threads`` torch threads (``device_augment.py``), the loader having cut the final patch of each
  sample that is neither rotated nor scaled.

Both start from the enlarged patches the loader cuts (random intensities, labels 0-3 with -1 beyond the
image) and draw with the same seeds per batch, with nnU-Net's probabilities, so individual batches differ in
which transforms they apply; the figures are medians over ``--batches`` batches.

Usage:  python bench/augment.py [--device cuda] [--plans brats hippocampus] [--batches 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segflow.train.augment import training_pipeline  # noqa: E402
from segflow.train.device_augment import BatchedAugmentation  # noqa: E402
from segflow.train.patch_geometry import AugmentationSettings, centre_window  # noqa: E402

# patch, batch size, channels and masked channels of bench/train_step.py's plans
PLANS = {
    "hippocampus": ([40, 56, 40], 9, 1, []),
    "brats": ([128, 128, 128], 2, 4, [0, 1, 2, 3]),
}


def enlarged_batch(settings: AugmentationSettings, batch: int, channels: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    shape = settings.enlarged_patch
    image = torch.randn((batch, channels, *shape), generator=generator)
    seg = torch.randint(0, 4, (batch, 1, *[max(1, s // 8) for s in shape]), generator=generator, dtype=torch.int16)
    seg = torch.nn.functional.interpolate(seg.float(), size=shape, mode="nearest").to(torch.int16)
    seg[:, :, : shape[0] // 8] = -1
    return image, seg


def as_loaded(image: torch.Tensor, seg: torch.Tensor, params: dict, final) -> dict:
    """The batch ``PatchLoader.cut_for_the_device`` would send for these enlarged patches."""
    window = (slice(None), slice(None), *centre_window(image.shape[2:], final))
    moved = torch.from_numpy(np.flatnonzero(params["spatial"]))
    return {
        "data": image[window].clone(),
        "seg": seg[window].clone(),
        "moved_data": image[moved],
        "moved_seg": seg[moved],
        "augmentation": params,
    }


def per_sample_seconds(settings, masked, image, seg, seed: int) -> float:
    pipeline = training_pipeline(settings, masked)
    np.random.seed(seed)
    torch.manual_seed(seed)
    started = time.perf_counter()
    for b in range(len(image)):
        pipeline(image=image[b].clone(), segmentation=seg[b].clone())
    return time.perf_counter() - started


def batched_seconds(settings, masked, image, seg, seed: int, device: torch.device) -> float:
    augmentation = BatchedAugmentation(settings, masked)
    np.random.seed(seed)
    params = augmentation.draw(len(image), image.shape[1])
    batch = as_loaded(image, seg, params, settings.patch_size)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    augmentation.apply(batch)
    sync()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", nargs="+", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of segflow's batched augmentation")
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    for plan in args.plans:
        patch, batch, channels, masked = PLANS[plan]
        settings = AugmentationSettings(patch)
        theirs, ours = [], []
        for i in range(args.batches):
            image, seg = enlarged_batch(settings, batch, channels, i)
            torch.set_num_threads(1)
            theirs.append(per_sample_seconds(settings, masked, image, seg, i))
            torch.set_num_threads(args.threads)
            ours.append(batched_seconds(settings, masked, image, seg, i, device))
        theirs_s, ours_s = statistics.median(theirs), statistics.median(ours)
        print(
            f"== {plan}: batch {batch} x {channels} x {settings.enlarged_patch} -> {patch}, median of {args.batches}\n"
            f"   batchgeneratorsv2 per sample, 1 CPU thread (one nnunetv2 worker): {theirs_s:.3f} s per batch\n"
            f"   segflow batched on {name} ({args.threads} torch threads):          {ours_s:.3f} s per batch\n"
            f"   ratio {ours_s / theirs_s:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
