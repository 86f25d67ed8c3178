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
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform

from segflow.train import batched

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
