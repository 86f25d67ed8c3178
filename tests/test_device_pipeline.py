"""The default training augmentation as a whole (``augment_on: device``): ``BatchedAugmentation.apply`` on a batch
equals nnunetv2's batchgeneratorsv2 pipeline (augment.training_pipeline, the one nnunetv2 2.8.1 builds) run sample
by sample, given the same parameters. Every transform is drawn for every sample (each RandomTransform's
probability set to 1; per channel, rotation and scaling as drawn), the parameters batchgeneratorsv2 draws are
recorded as it runs and handed to the device, and the noise it adds is added where the device adds its own. A
transform moved, dropped or applied twice changes the output. The parameters' distributions are
test_device_augment.py's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_device_augment import INTENSITY, device_parameters

from segflow.train import batched
from segflow.train.augment import training_pipeline
from segflow.train.device_augment import BatchedAugmentation
from segflow.train.patch_geometry import AugmentationSettings, centre_window

BATCH, CHANNELS, MASKED = 24, 2, [1]
PATCHES = {"3d": [6, 8, 7], "2d": [9, 10], "dummy 2d": [4, 14, 13]}


def enlarged_batch(settings: AugmentationSettings, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B x C x enlarged patch images (positive, smooth plus noise: what blur, low resolution and gamma change
    visibly) and label maps of 0-2 with -1 around the border (outside the image)."""
    generator = torch.Generator().manual_seed(seed)
    shape = settings.enlarged_patch
    grids = torch.meshgrid(*[torch.linspace(0, 3, n) for n in shape], indexing="ij")
    smooth = sum(torch.sin(g * (k + 1)) for k, g in enumerate(grids))
    images = 50 + 10 * smooth + 5 * torch.randn((BATCH, CHANNELS, *shape), generator=generator)
    seg = torch.randint(0, 3, (BATCH, 1, *shape), generator=generator, dtype=torch.int16)
    border = [slice(None), slice(None)] + [slice(1, n - 1) for n in shape]
    outside = torch.full_like(seg, -1)
    outside[tuple(border)] = seg[tuple(border)]
    return images, outside


class Recorder:
    """batchgeneratorsv2's pipeline with every intensity transform drawn, recording what each transform draws
    and the noise it adds."""

    def __init__(self, settings: AugmentationSettings):
        self.pipeline = training_pipeline(settings, MASKED)
        steps = self.pipeline.transforms
        spatial = steps[1] if settings.dummy_2d else steps[0]
        spatial.p_rotation = spatial.p_scaling = 0.5  # so that both paths (moved and not) are taken
        first = steps.index(spatial) + (2 if settings.dummy_2d else 1)
        randoms = steps[first : first + len(INTENSITY)]
        self.transforms = {"spatial": spatial, "mirror": steps[first + len(INTENSITY)]}
        for name, random in zip(INTENSITY, randoms, strict=True):
            random.apply_probability = 1
            self.transforms[name] = random.transform
        for name, transform in self.transforms.items():
            transform.get_parameters = self.recording(name, transform.get_parameters)
        noise = self.transforms["noise"]
        noise._apply_to_image = self.noise_recording(noise._apply_to_image)

    def recording(self, name, draw):
        def recorded(**data):
            self.drawn[name] = draw(**data)
            return self.drawn[name]

        return recorded

    def noise_recording(self, add):
        def recorded(image, **params):
            before = image.clone()
            after = add(image, **params)
            self.noise = after - before
            return after

        return recorded

    def __call__(self, image: torch.Tensor, seg: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
        self.drawn, self.noise = {}, None
        out = self.pipeline(image=image.clone(), segmentation=seg.clone())
        return self.drawn, self.noise, out["image"], out["segmentation"]


def device_batch(settings, images, seg, parameters) -> dict:
    """The batch PatchLoader.cut_for_the_device sends: final patches (the centres of the enlarged ones), the
    enlarged patches of the moved samples, and the parameters."""
    params = {key: np.stack([p[key] for p in parameters]) for key in parameters[0]}
    params["matrix"] = params["matrix"].astype(np.float32)
    params["noise_seed"] = np.array(0, dtype=np.int64)
    window = (slice(None), slice(None), *centre_window(settings.enlarged_patch, settings.patch_size))
    moved = np.flatnonzero(params["spatial"])
    batch = {"data": images[window].clone(), "seg": seg[window].clone(), "augmentation": params}
    return {**batch, "moved_data": images[moved].clone(), "moved_seg": seg[moved].clone()}


@pytest.mark.parametrize("kind", list(PATCHES))
def test_the_device_pipeline_equals_batchgeneratorsv2s_given_the_same_parameters(kind, monkeypatch):
    settings = AugmentationSettings(PATCHES[kind])
    images, seg = enlarged_batch(settings, seed=3)
    recorder = Recorder(settings)
    torch.manual_seed(11)
    np.random.seed(11)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batchgeneratorsv2 runs in single-threaded workers
    try:
        recorded = [recorder(image, labels) for image, labels in zip(images, seg, strict=True)]
    finally:
        torch.set_num_threads(threads)
    parameters = [device_parameters(settings, CHANNELS, drawn) for drawn, *_ in recorded]
    noise = torch.stack([n for _, n, _, _ in recorded])

    def their_noise(image, sigmas, applied, generator=None):
        return image.add_(noise)

    monkeypatch.setattr(batched, "add_noise", their_noise)
    image, labels = BatchedAugmentation(settings, MASKED).apply(device_batch(settings, images, seg, parameters))
    expected_image = torch.stack([i for *_, i, _ in recorded])
    expected_labels = torch.stack([s for *_, s in recorded])
    moved = sum(bool(p["spatial"]) for p in parameters)
    assert 0 < moved < BATCH and all(p[f"{name}_applied"].any() for p in parameters for name in ("gamma",))
    assert torch.equal(labels, expected_labels)
    torch.testing.assert_close(image, expected_image, rtol=0, atol=2e-4)


@pytest.mark.parametrize("kind", list(PATCHES))
def test_the_device_pipeline_never_waits_for_the_device(kind, monkeypatch):
    """Every transform drawn for every sample and the batch on torch's meta device, which holds shapes and no
    values: an operation of ``apply`` that reads a value the device computed (``.tolist()``, ``nonzero()``,
    ``unique``, boolean indexing, ``if tensor.any()``), and so on a GPU would wait for its queue to drain, fails
    there. The parameters stay on the host, where the workers drew them."""
    settings = AugmentationSettings(PATCHES[kind])
    augmentation = BatchedAugmentation(settings, MASKED, label_values=[0, 1, 2])
    np.random.seed(0)
    params = augmentation.draw(BATCH, CHANNELS)
    for key, value in params.items():
        if value.dtype == bool:
            params[key] = np.ones_like(value)
    params["spatial"][::2] = False  # moved and unmoved samples
    moved = int(params["spatial"].sum())
    meta = torch.device("meta")
    batch = {
        "data": torch.empty((BATCH, CHANNELS, *settings.patch_size), device=meta),
        "seg": torch.empty((BATCH, 1, *settings.patch_size), dtype=torch.int16, device=meta),
        "moved_data": torch.empty((moved, CHANNELS, *settings.enlarged_patch), device=meta),
        "moved_seg": torch.empty((moved, 1, *settings.enlarged_patch), dtype=torch.int16, device=meta),
        "augmentation": params,
    }
    host_generator = torch.Generator
    monkeypatch.setattr(torch, "Generator", lambda device=None: host_generator())  # the meta device has none
    image, seg = augmentation.apply(batch)
    assert image.device == meta and image.shape == batch["data"].shape and seg.shape == batch["seg"].shape
