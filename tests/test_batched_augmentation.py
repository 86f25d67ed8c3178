"""segflow/train/batched.py against batchgeneratorsv2 (the version nnunetv2 2.8.1 augments with): each sample's
parameters are drawn by batchgeneratorsv2's own transform, which then transforms the sample; the batched
function, given the same parameters for the whole batch, must give the same values (within 1e-4). The batched
functions work in place, so each gets a copy."""

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform

from segflow.networks.unet import deep_supervision_scales
from segflow.train import batched
from segflow.train.loss import target_pyramid
from segflow.train.patch_geometry import centre_window

SHAPES = {"3d": (4, 2, 7, 9, 8), "2d": (4, 3, 11, 10)}


def a_batch(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) * 20 + 60


def per_sample(transform, batch, seed):
    """batchgeneratorsv2, sample by sample: its parameters for each sample, and its output."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    outputs, parameters = [], []
    for sample in batch:
        params = transform.get_parameters(image=sample)
        outputs.append(transform._apply_to_image(sample.clone(), **params))
        parameters.append(params)
    return torch.stack(outputs), parameters


def channel_table(parameters, channels, key, index_key="apply_to_channel", fill=1.0):
    """B x C values of a per-channel parameter (``fill`` where not applied) and the B x C applied mask."""
    values = torch.full((len(parameters), channels), fill)
    applied = torch.zeros((len(parameters), channels), dtype=torch.bool)
    for b, params in enumerate(parameters):
        for k, c in enumerate(params[index_key].tolist()):
            applied[b, c] = True
            values[b, c] = float(params[key][k]) if params[key] is not None else fill
    return values, applied


@pytest.mark.parametrize("dims", list(SHAPES))
def test_mirror_equals_batchgeneratorsv2(dims):
    batch = a_batch(SHAPES[dims], 0)
    spatial = batch.ndim - 2
    expected, parameters = per_sample(MirrorTransform(tuple(range(spatial))), batch, 1)
    flips = torch.zeros((len(batch), spatial), dtype=torch.bool)
    for b, params in enumerate(parameters):
        flips[b, params["axes"]] = True
    assert flips.any() and not flips.all(), "the draw should flip some axes of some samples"
    assert torch.equal(batched.mirror(batch.clone(), flips), expected)
    labels = (batch > 60).to(torch.int16)
    expected_labels = torch.stack(
        [MirrorTransform(())._apply_to_segmentation(s, **p) for s, p in zip(labels, parameters, strict=True)]
    )
    assert torch.equal(batched.mirror(labels.clone(), flips), expected_labels)


@pytest.mark.parametrize("dims", list(SHAPES))
def test_multiplicative_brightness_equals_batchgeneratorsv2(dims):
    batch = a_batch(SHAPES[dims], 2)
    transform = MultiplicativeBrightnessTransform(
        BGContrast((0.75, 1.25)), synchronize_channels=False, p_per_channel=0.5
    )
    expected, parameters = per_sample(transform, batch, 3)
    factors, applied = channel_table(parameters, batch.shape[1], "multipliers")
    assert applied.any() and not applied.all()
    torch.testing.assert_close(batched.multiply(batch.clone(), factors, applied), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preserve_range", [True, False])
@pytest.mark.parametrize("dims", list(SHAPES))
def test_contrast_equals_batchgeneratorsv2(dims, preserve_range):
    batch = a_batch(SHAPES[dims], 4)
    transform = ContrastTransform(
        BGContrast((0.75, 1.25)), preserve_range, synchronize_channels=False, p_per_channel=0.5
    )
    expected, parameters = per_sample(transform, batch, 5)
    factors, applied = channel_table(parameters, batch.shape[1], "multipliers")
    assert applied.any() and not applied.all()
    result = batched.contrast(batch.clone(), factors, applied, preserve_range)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dims", list(SHAPES))
def test_gamma_equals_batchgeneratorsv2(dims):
    batch = a_batch(SHAPES[dims], 6)
    transform = GammaTransform(
        BGContrast((0.7, 1.5)), p_invert_image=0.5, synchronize_channels=False, p_per_channel=0.7, p_retain_stats=0.5
    )
    expected, parameters = per_sample(transform, batch, 7)
    gammas, applied = channel_table(parameters, batch.shape[1], "gamma")
    invert = torch.zeros_like(applied)
    retain = torch.zeros_like(applied)
    for b, params in enumerate(parameters):
        for k, c in enumerate(params["apply_to_channel"].tolist()):
            invert[b, c], retain[b, c] = bool(params["invert_image"][k]), bool(params["retain_stats"][k])
    assert applied.any() and invert[applied].any() and not invert[applied].all() and retain[applied].any()
    result = batched.gamma(batch.clone(), gammas, applied, invert, retain)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)


def test_gaussian_noise_has_batchgeneratorsv2s_distribution():
    """Noise draws cannot be shared, so the distributions are compared: over the 32^3 voxels of each channel,
    the noise added by each has mean 0 and the drawn standard deviation, within five standard errors; channels
    left alone are unchanged."""
    batch = a_batch((4, 2, 32, 32, 32), 8)
    transform = GaussianNoiseTransform(noise_variance=(0.05, 0.1), p_per_channel=0.5, synchronize_channels=False)
    expected, parameters = per_sample(transform, batch, 9)
    sigmas, applied = channel_table(parameters, batch.shape[1], "sigmas", index_key="apply_idx", fill=0.0)
    assert applied.any() and not applied.all()
    result = batched.add_noise(batch.clone(), sigmas, applied, torch.Generator().manual_seed(10))
    for ours_or_theirs in (result, expected):
        noise = (ours_or_theirs - batch).flatten(2)
        assert torch.equal(noise[~applied], torch.zeros_like(noise[~applied]))
        voxels = noise.shape[-1]  # within five standard errors of mean and standard deviation
        assert (noise[applied].mean(-1).abs() < 5 * sigmas[applied] / voxels**0.5).all()
        torch.testing.assert_close(noise[applied].std(-1), sigmas[applied], rtol=5 / (2 * voxels) ** 0.5, atol=0)


@pytest.mark.parametrize("dims", list(SHAPES))
def test_gaussian_blur_equals_batchgeneratorsv2(dims):
    batch = a_batch(SHAPES[dims], 11)
    transform = GaussianBlurTransform(
        blur_sigma=(0.5, 1.0), synchronize_channels=False, synchronize_axes=False, p_per_channel=0.5, benchmark=True
    )
    expected, parameters = per_sample(transform, batch, 12)
    spatial = batch.ndim - 2
    sigmas = torch.ones((*batch.shape[:2], spatial))
    applied = torch.stack([p["apply_to_channel"] for p in parameters])
    for b, params in enumerate(parameters):
        for k, c in enumerate(params["apply_to_channel"].nonzero().flatten().tolist()):
            sigmas[b, c] = torch.tensor(params["sigmas"][k])
    assert applied.any() and not applied.all()
    torch.testing.assert_close(batched.blur(batch.clone(), sigmas, applied), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ignore_axes", [None, (0,)])
@pytest.mark.parametrize("dims", list(SHAPES))
def test_simulated_low_resolution_equals_batchgeneratorsv2(dims, ignore_axes):
    batch = a_batch(SHAPES[dims], 13)
    transform = SimulateLowResolutionTransform(
        scale=(0.5, 1), synchronize_channels=False, synchronize_axes=True, ignore_axes=ignore_axes, p_per_channel=0.5
    )
    expected, parameters = per_sample(transform, batch, 14)
    spatial = batch.ndim - 2
    scales = torch.ones((*batch.shape[:2], spatial))
    applied = torch.zeros(batch.shape[:2], dtype=torch.bool)
    for b, params in enumerate(parameters):
        for c, s in zip(params["apply_to_channel"].tolist(), params["scales"], strict=True):
            applied[b, c], scales[b, c] = True, s
    assert applied.any() and not applied.all()
    result = batched.simulate_low_resolution(batch.clone(), scales, applied)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)


def test_masking_outside_the_mask_equals_batchgeneratorsv2():
    batch = a_batch((3, 3, 6, 7, 5), 15)
    seg = (a_batch((3, 1, 6, 7, 5), 16) > 50).to(torch.int16) - (a_batch((3, 1, 6, 7, 5), 17) > 70).to(torch.int16)
    transform = MaskImageTransform(apply_to_channels=[0, 2], channel_idx_in_seg=0, set_outside_to=0)
    expected = torch.stack(
        [transform(image=i.clone(), segmentation=s)["image"] for i, s in zip(batch, seg, strict=True)]
    )
    assert (seg < 0).any()
    assert torch.equal(batched.mask_outside(batch.clone(), seg, [0, 2]), expected)


SPATIAL_CASES = {
    # name: (enlarged input of each sample, final patch, rotation range)
    "3d": ((3, 14, 16, 15), (9, 10, 8), (-0.52, 0.52)),
    "2d": ((3, 30, 26), (17, 19), (-np.pi, np.pi)),
    # one voxel larger than the patch: rotated kernels reach outside the input, where the padding label counts;
    "3d, tight": ((3, 10, 11, 9), (9, 10, 8), (-0.52, 0.52)),
    "2d, tight": ((3, 18, 20), (17, 19), (-np.pi, np.pi)),
    # unrotated, every point lies between 2^d voxels of random labels with equal weights: scores tie
    "3d, between voxels": ((3, 10, 11, 9), (9, 10, 8), (0.0, 0.0)),
}


@pytest.mark.parametrize("labels", [None, [0, 1, 2, 3, 4]], ids=["labels found", "the dataset's labels"])
@pytest.mark.parametrize("case", list(SPATIAL_CASES))
def test_rotation_and_scaling_equal_batchgeneratorsv2(case, labels):
    """Images within 1e-4 and identical label maps, including the -1 brought in from outside the input, for
    the samples batchgeneratorsv2 rotates or scales; the others it cuts from where the loader cuts them. The
    label maps are the same whether the labels are found in them (on a CPU) or all the dataset's are scored
    (on a GPU, where finding them waits for the device), one of which (4) is in no map."""
    (channels, *shape), patch, rotation = SPATIAL_CASES[case]
    samples = 6
    image = a_batch((samples, channels, *shape), 18)
    seg = labels_of(samples, shape, 19, grain=1 if "between" in case else 4)
    transform = SpatialTransform(
        patch,
        patch_center_dist_from_border=0,
        random_crop=False,
        p_elastic_deform=0,
        p_rotation=0.4,
        rotation=rotation,
        p_scaling=0.4,
        scaling=(0.7, 1.4),
        p_synchronize_scaling_across_axes=1,
        bg_style_seg_sampling=False,
        border_mode_seg="constant",
        padding_value_seg=-1,
    )
    np.random.seed(20)
    torch.manual_seed(20)
    expected_image, expected_seg, matrices, moved = [], [], [], []
    for b in range(samples):
        params = transform.get_parameters(image=image[b])
        expected_image.append(transform._apply_to_image(image[b].clone(), **params))
        expected_seg.append(transform._apply_to_segmentation(seg[b].clone(), **params))
        moved.append(params["affine"] is not None)
        matrices.append(torch.eye(len(patch)) if params["affine"] is None else torch.from_numpy(params["affine"]))
    moved = torch.tensor(moved)
    assert moved.any() and not moved.all()
    expected_image, expected_seg = torch.stack(expected_image), torch.stack(expected_seg)
    matrices = torch.stack(matrices)[moved]
    result_image, result_seg = batched.resample(image[moved], seg[moved], matrices, patch, labels=labels)
    torch.testing.assert_close(result_image, expected_image[moved], rtol=1e-4, atol=1e-4)
    assert (expected_seg[moved] == -1).any()
    assert torch.equal(result_seg, expected_seg[moved])
    window = (slice(None), slice(None), *centre_window(shape, patch))  # where the loader cuts the others
    assert torch.equal(image[~moved][window], expected_image[~moved])
    assert torch.equal(seg[~moved][window], expected_seg[~moved])


def labels_of(samples, shape, seed, grain: int = 4):
    """Label maps with blobs of labels 0-3 (about ``grain`` voxels wide) and a border of -1 (outside the image),
    as the loader cuts them."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((samples, 1, *[max(2, s // grain) for s in shape]), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=shape, mode="bilinear" if len(shape) == 2 else "trilinear")
    seg = (smooth * 4).clamp(max=3.99).floor().to(torch.int16)
    seg[(slice(None), slice(None), slice(0, shape[0] // 4))] = -1
    return seg


@pytest.mark.parametrize("dims", list(SHAPES))
def test_deep_supervision_targets_equal_batchgeneratorsv2(dims):
    """The target pyramid of a whole batch equals batchgeneratorsv2's downsampling of each sample, at
    nnU-Net's scales for a network whose strides halve unevenly (odd sizes round as it rounds)."""
    strides = [[1] * (len(SHAPES[dims]) - 2), *[[2] * (len(SHAPES[dims]) - 2)] * 2, [1, *[2] * (len(SHAPES[dims]) - 3)]]
    scales = deep_supervision_scales(strides)
    seg = labels_of(SHAPES[dims][0], SHAPES[dims][2:], 21).clamp(min=0)
    expected = [DownsampleSegForDSTransform(scales)(segmentation=sample)["segmentation"] for sample in seg]
    result = target_pyramid(seg, scales)
    assert len(result) == len(scales) == 3
    for level, ours in enumerate(result):
        assert torch.equal(ours, torch.stack([sample[level] for sample in expected]))
