"""The dataset fingerprint (method reference §2): one aggregation over the per-case crop records.

``fingerprint.json`` has nnU-Net's fields: ``spacings`` and ``shapes_after_crop`` (per case, sorted case
order), ``median_relative_size_after_cropping`` and ``foreground_intensity_properties_per_channel``
(mean, median, std, min, max, percentile_00_5, percentile_99_5 per channel).

The intensity statistics are those of nnU-Net's sample: ``floor(1e8 / N)`` foreground intensities per case
and channel, drawn with replacement by ``RandomState(1234)`` (one generator per case, channels in turn).
Instead of materialising up to 1e8 floats per channel we draw the same indices, count how often each
voxel was drawn, and compute the statistics of the weighted values. The numbers are those of nnU-Net's
sample; the memory is that of one case's foreground voxels plus the voxels drawn (at most nnU-Net's 1e8
per channel).
"""

from __future__ import annotations

import numpy as np

from segflow.io import load_json, load_npy, save_json

FOREGROUND_SAMPLES_TOTAL = 10**8
SAMPLING_SEED = 1234


def sample_counts(num_foreground: int, num_samples: int, rng: np.random.RandomState) -> np.ndarray:
    """How often each of ``num_foreground`` voxels is drawn by ``rng.choice(.., num_samples, replace=True)``."""
    drawn = rng.randint(0, num_foreground, size=num_samples)
    return np.bincount(drawn, minlength=num_foreground)


def weighted_percentile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """numpy's default (linear) percentile of the multiset where ``values[i]`` occurs ``counts[i]`` times."""
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1])
    position = (total - 1) * q / 100.0
    low = int(np.floor(position))
    high = min(low + 1, total - 1)
    at_low = values[np.searchsorted(cumulative, low, side="right")]
    at_high = values[np.searchsorted(cumulative, high, side="right")]
    return float(at_low + (position - low) * (at_high - at_low))


def weighted_statistics(values: np.ndarray, counts: np.ndarray) -> dict:
    order = np.argsort(values, kind="stable")
    values, counts = values[order].astype(np.float64), counts[order]
    keep = counts > 0
    values, counts = values[keep], counts[keep]
    total = counts.sum()
    mean = float((values * counts).sum() / total)
    return {
        "max": float(values[-1]),
        "mean": mean,
        "median": weighted_percentile(values, counts, 50.0),
        "min": float(values[0]),
        "percentile_00_5": weighted_percentile(values, counts, 0.5),
        "percentile_99_5": weighted_percentile(values, counts, 99.5),
        "std": float(np.sqrt((counts * (values - mean) ** 2).sum() / total)),
    }


def intensity_properties(foreground_per_case, num_samples: int) -> dict[str, dict]:
    """Per channel statistics of nnU-Net's foreground sample, from each case's C x N foreground values (any
    iterable: a case is read, sampled and let go, and only its drawn voxels are kept, at most ``num_samples``
    per case and channel, so the memory stays that of nnU-Net's sample however many cases there are)."""
    values, counts = {}, {}
    for foreground in foreground_per_case:
        rng = np.random.RandomState(SAMPLING_SEED)
        if foreground.shape[1] == 0:
            continue
        for channel in range(foreground.shape[0]):
            drawn = sample_counts(foreground.shape[1], num_samples, rng)
            kept = drawn > 0
            values.setdefault(channel, []).append(foreground[channel][kept])
            counts.setdefault(channel, []).append(drawn[kept].astype(np.int32))
    if not values:
        raise ValueError("no case has any foreground voxel; cannot compute intensity statistics")
    return {
        str(channel): weighted_statistics(np.concatenate(values[channel]), np.concatenate(counts[channel]))
        for channel in sorted(values)
    }


def build_fingerprint(crop_records, foreground_files) -> dict:
    records = [load_json(p) for p in crop_records]
    order = np.argsort([r["case"] for r in records], kind="stable")
    records = [records[i] for i in order]
    foreground = (load_npy(foreground_files[i]) for i in order)
    num_samples = FOREGROUND_SAMPLES_TOTAL // len(records)
    return {
        "foreground_intensity_properties_per_channel": intensity_properties(foreground, num_samples),
        "median_relative_size_after_cropping": float(np.median([r["relative_size"] for r in records])),
        "shapes_after_crop": [r["shape_after_crop"] for r in records],
        "spacings": [r["spacing"] for r in records],
    }


def write_fingerprint(crop_records, foreground_files, out) -> None:
    save_json(build_fingerprint(crop_records, foreground_files), out)
