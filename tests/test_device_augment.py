"""segflow/train/device_augment.py: the parameters it draws per sample have nnunetv2 2.8.1's distributions
(batchgeneratorsv2's own draws, 10 000 samples each, compared transform by transform), and a training batch
augmented on the device has the shapes, labels and masking of nnunetv2's training batches."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from segflow.io import save_json, save_npy
from segflow.preprocess import class_locations
from segflow.train import batched
from segflow.train.augment import TABLE
from segflow.train.data import Case, PatchLoader
from segflow.train.device_augment import BatchedAugmentation
from segflow.train.patch_geometry import AugmentationSettings, centre_window, rotation_matrix

DRAWS = 10_000
CHANNELS = 2
PATCHES = {"3d": [4, 4, 4], "2d": [4, 4], "dummy 2d": [1, 4, 4]}


#: nnunetv2's intensity transforms in its order, by the names of their rows in augment.TABLE (and of their
#: parameters in device_augment).
INTENSITY = ("noise", "blur", "brightness", "contrast", "low_res", "gamma_inverted", "gamma")


def drawn_by_batchgeneratorsv2(settings: AugmentationSettings, channels: int) -> dict:
    """One sample's draws of nnunetv2's batchgeneratorsv2 pipeline, in its order: each transform's parameters,
    None for an intensity transform whose RandomTransform does not apply."""
    image = torch.zeros((channels, *settings.patch_size))
    transforms = {row.name: row.worker(settings, ()) for row in TABLE}
    spatial = transforms["spatial"][1 if settings.dummy_2d else 0]
    drawn = {"spatial": spatial.get_parameters(image=image[:, 0] if settings.dummy_2d else image)}
    for name in INTENSITY:
        (transform,) = transforms[name]
        applies = transform.get_parameters()["apply_transform"]
        drawn[name] = transform.transform.get_parameters(image=image) if applies else None
    drawn["mirror"] = {"axes": [a for a in settings.mirror_axes if torch.rand(1) < 0.5]}
    return drawn


def device_parameters(settings: AugmentationSettings, channels: int, drawn: dict) -> dict[str, np.ndarray]:
    """batchgeneratorsv2's draws of one sample (``drawn_by_batchgeneratorsv2``) in device_augment's terms."""
    dims = len(settings.patch_size)
    affine = drawn["spatial"]["affine"]
    plane = 2 if settings.dummy_2d else dims
    p = {"spatial": np.array(affine is not None), "matrix": np.eye(plane) if affine is None else np.asarray(affine)}
    p["noise_applied"], p["noise"] = np.full(channels, False), np.zeros(channels)
    if drawn["noise"] is not None:
        p["noise_applied"][drawn["noise"]["apply_idx"].numpy()] = True
        p["noise"][:] = drawn["noise"]["sigmas"]
    p["blur_applied"], p["blur"] = np.full(channels, False), np.ones((channels, dims))
    if drawn["blur"] is not None:
        p["blur_applied"] = drawn["blur"]["apply_to_channel"].numpy()
        p["blur"][p["blur_applied"]] = np.array(drawn["blur"]["sigmas"]).reshape(-1, dims)
    for name in ("brightness", "contrast"):
        p[f"{name}_applied"], p[name] = np.full(channels, False), np.ones(channels)
        if drawn[name] is not None:
            p[f"{name}_applied"][drawn[name]["apply_to_channel"].numpy()] = True
            p[name][drawn[name]["apply_to_channel"].numpy()] = drawn[name]["multipliers"].numpy()
    p["low_res_applied"], p["low_res"] = np.full(channels, False), np.ones((channels, dims))
    if drawn["low_res"] is not None:
        scales = drawn["low_res"]["scales"] if len(drawn["low_res"]["apply_to_channel"]) else torch.ones((0, dims))
        p["low_res_applied"][drawn["low_res"]["apply_to_channel"].numpy()] = True
        p["low_res"][drawn["low_res"]["apply_to_channel"].numpy()] = scales.numpy()
    for name in ("gamma_inverted", "gamma"):
        p[f"{name}_applied"], p[name] = np.full(channels, False), np.ones(channels)
        if drawn[name] is not None:
            gamma = drawn[name]
            assert gamma["retain_stats"].all() and bool(gamma["invert_image"].all()) == (name == "gamma_inverted")
            p[f"{name}_applied"][gamma["apply_to_channel"].numpy()] = True
            p[name][gamma["apply_to_channel"].numpy()] = gamma["gamma"].numpy()
    mirror = np.full(dims, False)
    mirror[drawn["mirror"]["axes"]] = True
    p["mirror"] = mirror
    return p


def theirs(settings: AugmentationSettings, channels: int) -> dict[str, np.ndarray]:
    """One sample's parameters drawn by nnunetv2's batchgeneratorsv2 pipeline, in device_augment's terms."""
    return device_parameters(settings, channels, drawn_by_batchgeneratorsv2(settings, channels))


def compare(ours: dict, reference: dict, key: str):
    """Booleans: frequencies within five standard errors; numbers (where their transform applies): a
    two-sample Kolmogorov-Smirnov test per entry."""
    ours, reference, ours_applied, reference_applied = (
        np.stack([p.get(k, np.array(True)) for p in params])
        for k, params in ((key, ours), (key, reference), (f"{key}_applied", ours), (f"{key}_applied", reference))
    )
    if ours.dtype == bool:
        frequency = reference.mean(0)
        error = 5 * np.sqrt(np.maximum(frequency * (1 - frequency), 1e-4) * 2 / len(ours))
        assert np.all(np.abs(ours.mean(0) - frequency) <= error), (key, ours.mean(0), frequency)
        return
    for column in range(ours[0].size):
        a = ours.reshape(len(ours), -1)[:, column][applied_entries(ours_applied, ours)[:, column]]
        b = reference.reshape(len(reference), -1)[:, column][applied_entries(reference_applied, reference)[:, column]]
        assert min(len(a), len(b)) > 100, (key, column)
        assert ks_2samp(a, b).pvalue > 1e-4, (key, column, np.mean(a), np.mean(b))


def applied_entries(applied: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Draws x entries: whether the transform applies to each entry (a channel's flag covers its axes)."""
    applied = applied.reshape(len(applied), *applied.shape[1:], *[1] * (values.ndim - applied.ndim))
    return np.broadcast_to(applied, values.shape).reshape(len(values), -1)


@pytest.fixture
def one_torch_thread():
    """batchgeneratorsv2 draws with tiny tensor operations, which on more threads only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(PATCHES))
def test_parameters_have_nnunetv2s_distributions(kind, one_torch_thread):
    settings = AugmentationSettings(PATCHES[kind])
    assert settings.dummy_2d == (kind == "dummy 2d")
    augmentation = BatchedAugmentation(settings)
    np.random.seed(0)
    ours = [augmentation.draw_sample(CHANNELS) for _ in range(DRAWS)]
    np.random.seed(1)
    torch.manual_seed(1)
    reference = [theirs(settings, CHANNELS) for _ in range(DRAWS)]
    assert set(ours[0]) == set(reference[0])
    for key in ours[0]:
        compare(ours, reference, key)


def nothing_drawn(augmentation: BatchedAugmentation, batch_size: int, channels: int) -> dict:
    """Parameters of a batch that no transform changes (identity matrices, factors 1)."""
    params = augmentation.draw(batch_size, channels)
    for key, value in params.items():
        if value.dtype == bool:
            params[key] = np.zeros_like(value)
    params["matrix"] = np.broadcast_to(np.eye(params["matrix"].shape[-1]), params["matrix"].shape).copy()
    return params


def a_case(folder: Path, shape) -> Case:
    """A two-channel case of labels 0-2 with every third column -1 (outside the non-zero mask)."""
    generator = np.random.default_rng(4)
    seg = generator.integers(0, 3, (1, *shape)).astype(np.int8)
    seg[..., ::3] = -1
    save_npy(generator.normal(size=(CHANNELS, *shape)).astype(np.float32) + 3, folder / "case.npy")
    save_npy(seg, folder / "case_seg.npy")
    save_json({"class_locations": class_locations(seg, [1, 2])}, folder / "case.json")
    return Case(folder, "case")


LOADER_PATCHES = {
    "3d": ([8, 10, 9], (12, 20, 18)),
    "2d": ([10, 12], (6, 30, 28)),
    "dummy 2d": ([2, 12, 12], (6, 30, 28)),
}


def loaded_both_ways(kind, tmp_path, draw_with, seed: int):
    """From the same seed, a batch of the device loader, drawing with ``draw_with(augmentation, batch,
    channels)``, and the same (enlarged) patches from a loader without any augmentation; and the
    augmentation."""
    patch, shape = LOADER_PATCHES[kind]
    settings = AugmentationSettings(patch)
    augmentation = BatchedAugmentation(settings, masked_channels=[1])
    case = a_case(tmp_path, shape)
    is_2d = kind == "2d"
    plain = PatchLoader([case], 3, settings.enlarged_patch, patch, is_2d)
    device = PatchLoader(
        [case], 3, settings.enlarged_patch, patch, is_2d, draw=lambda b, c: draw_with(augmentation, b, c)
    )
    np.random.seed(seed)
    enlarged = plain.generate_train_batch()
    np.random.seed(seed)
    return augmentation, enlarged, device.generate_train_batch()


@pytest.mark.parametrize("kind", list(LOADER_PATCHES))
def test_an_unchanged_sample_is_the_centre_of_its_enlarged_patch_masked_and_mirrored(kind, tmp_path):
    """With every transform drawn off, the loader sends the centre of each enlarged patch and the device
    batch is that, label -1 made 0 and the masked channel 0 there; mirroring sample 1 along every axis flips
    exactly that sample."""

    def mirror_sample_1(augmentation, batch, channels):
        params = nothing_drawn(augmentation, batch, channels)
        params["mirror"][1] = True
        return params

    augmentation, enlarged, loaded = loaded_both_ways(kind, tmp_path, mirror_sample_1, seed=5)
    assert loaded["moved_data"].shape[0] == 0, "nothing to rotate: only final patches travel"
    out_image, out_seg = augmentation.apply(loaded)
    window = (slice(None), slice(None), *centre_window(enlarged["data"].shape[2:], augmentation.settings.patch_size))
    expected_image, expected_seg = enlarged["data"][window].clone(), enlarged["seg"][window].clone()
    outside = expected_seg[:, 0] < 0
    expected_image[:, 1][outside] = 0
    expected_seg = expected_seg.clamp(min=0)
    axes = list(range(1, expected_seg.ndim - 1))
    expected_image[1], expected_seg[1] = expected_image[1].flip(axes), expected_seg[1].flip(axes)
    assert outside.any() and torch.equal(out_image, expected_image) and torch.equal(out_seg, expected_seg)


@pytest.mark.parametrize("kind", list(LOADER_PATCHES))
def test_rotated_samples_travel_enlarged_and_are_resampled_on_the_device(kind, tmp_path):
    """Samples 0 and 2 rotated (and scaled): their enlarged patches travel and become the resampled patch
    of batched.resample; sample 1 stays the centre of its own."""

    def rotate_0_and_2(augmentation, batch, channels):
        params = nothing_drawn(augmentation, batch, channels)
        params["spatial"][[0, 2]] = True
        angle, plane = 0.4, params["matrix"].shape[-1]
        params["matrix"][[0, 2]] = rotation_matrix([angle] * plane, 1.2).astype(np.float32)
        return params

    augmentation, enlarged, loaded = loaded_both_ways(kind, tmp_path, rotate_0_and_2, seed=6)
    assert torch.equal(loaded["moved_data"], enlarged["data"][[0, 2]])
    out_image, out_seg = augmentation.apply(loaded)
    patch, matrices = augmentation.settings.patch_size, torch.from_numpy(loaded["augmentation"]["matrix"][[0, 2]])
    image, seg = enlarged["data"][[0, 2]], enlarged["seg"][[0, 2]]
    if augmentation.settings.dummy_2d:
        flat = batched.resample(image.flatten(1, 2), seg.flatten(1, 2), matrices, patch[1:])
        resampled = flat[0].view(2, CHANNELS, *patch), flat[1].view(2, 1, *patch)
    else:
        resampled = batched.resample(image, seg, matrices, patch)
    outside = resampled[1][:, 0] < 0
    resampled[0][:, 1][outside] = 0
    assert torch.equal(out_image[[0, 2]], resampled[0]) and torch.equal(out_seg[[0, 2]], resampled[1].clamp(min=0))
    window = (slice(None), *centre_window(enlarged["data"].shape[2:], patch))
    assert torch.equal(out_seg[1], enlarged["seg"][1][window].clamp(min=0))


def previous_stage_batch(seed: int):
    """Three 3D samples: an image channel, and (target, previous stage) label maps with a few blobs each."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(20)] * 3, indexing="ij"))
    seg = np.zeros((3, 2, 20, 20, 20), np.int16)
    for b in range(3):
        for channel in range(2):
            for label in (1, 2, 1):
                centre, radius = rng.integers(4, 16, 3), rng.integers(2, 5)
                seg[b, channel][((grid - centre[:, None, None, None]) ** 2).sum(0) <= radius**2] = label
    return torch.from_numpy(rng.normal(size=(3, 1, 20, 20, 20)).astype(np.float32)), torch.from_numpy(seg)


def degraded_both_ways(seed: int):
    """(segflow's batch, nnunetv2's per-sample pipeline's batch, the undegraded one-hot) for one seed: the batched
    one-hot and the degradation where the batch is, against MoveSegAsOneHotToData, random morphology and random
    component removal sample by sample, with the same draws."""
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms

    from segflow.train.augment import cascade_transforms
    from segflow.train.device_augment import cascade_degradation, degrade_previous_stage, numpy_seeded

    data, seg = previous_stage_batch(seed)
    ours = degrade_previous_stage(data, seg, [1, 2], ComposeTransforms(cascade_degradation([1, 2])), seed)
    pipeline = ComposeTransforms(cascade_transforms([1, 2], degrade=True))
    with torch.random.fork_rng(devices=[]), numpy_seeded(seed):
        torch.manual_seed(seed)
        samples = [
            pipeline(image=image.clone(), segmentation=labels.clone()) for image, labels in zip(data, seg, strict=True)
        ]
    theirs = torch.stack([t["image"] for t in samples]), torch.stack([t["segmentation"] for t in samples])
    one_hot = torch.cat([(seg[:, 1:] == label).float() for label in (1, 2)], 1)
    return ours, theirs, one_hot


@pytest.mark.parametrize("seed", range(6))
def test_the_cascade_degradation_equals_batchgeneratorsv2s_pipeline(seed):
    (our_data, our_target), (their_data, their_target), _ = degraded_both_ways(seed)
    torch.testing.assert_close(our_data, their_data, rtol=0, atol=0)
    assert torch.equal(our_target, their_target)


def test_some_seeds_degrade_the_previous_stage():
    """The comparison above means something: among its seeds, some change the one-hot channels."""
    changed = [not torch.equal(ours[0][:, 1:], one_hot) for ours, _, one_hot in map(degraded_both_ways, range(6))]
    assert sum(changed) >= 2
