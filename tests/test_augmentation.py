"""segflow/train/augmentation.py and the table of segflow/train/augment.py: one augmentation object tells the
loader what to cut and do, wherever ``augment_on`` and the device put the work, and the table lists nnunetv2's
transforms once, in its order, for both pipelines."""

import numpy as np
import pytest
import torch

from segflow.train.augment import TABLE, training_pipeline
from segflow.train.augmentation import Augmentation

PATCH = [6, 8, 7]
#: nnunetv2 2.8.1's training transforms in its order (method reference §5.6), by segflow's row names
NNUNET_ORDER = (
    "spatial",
    "noise",
    "blur",
    "brightness",
    "contrast",
    "low_res",
    "gamma_inverted",
    "gamma",
    "mirror",
    "mask",
    "unlabelled",
)


def a_cut_batch(augmentation: Augmentation, size: int = 3) -> dict:
    """A batch as the loader cuts it for the batched augmentation, nothing rotated or scaled."""
    np.random.seed(0)
    params = augmentation.batched.draw(size, 2)
    params["spatial"][:] = False
    generator = torch.Generator().manual_seed(0)
    return {
        "data": torch.rand((size, 2, *PATCH), generator=generator),
        "seg": torch.randint(-1, 3, (size, 1, *PATCH), generator=generator, dtype=torch.int16),
        "moved_data": torch.empty((0, 2, *augmentation.settings.enlarged_patch)),
        "moved_seg": torch.empty((0, 1, *augmentation.settings.enlarged_patch), dtype=torch.int16),
        "augmentation": params,
    }


def test_the_table_lists_nnunetv2s_transforms_in_its_order():
    assert tuple(row.name for row in TABLE) == NNUNET_ORDER


def test_the_worker_pipeline_is_the_tables_rows_in_order():
    """batchgeneratorsv2's transforms as nnunetv2 composes them (its recorded pipelines pin their parameters:
    tests/test_nnunetv2_parity.py)."""
    augmentation = Augmentation(PATCH, masked_channels=[1], augment_on="workers")
    steps = training_pipeline(augmentation.settings, [1]).transforms
    assert [type(getattr(step, "transform", step)).__name__ for step in steps] == [
        "SpatialTransform",
        "GaussianNoiseTransform",
        "GaussianBlurTransform",
        "MultiplicativeBrightnessTransform",
        "ContrastTransform",
        "SimulateLowResolutionTransform",
        "GammaTransform",
        "GammaTransform",
        "MirrorTransform",
        "MaskImageTransform",
        "RemoveLabelTransform",
    ]
    assert [step.transform.p_invert_image for step in steps[6:8]] == [1, 0]


def test_validation_batches_are_final_patches_with_label_minus_one_as_background():
    work = Augmentation(PATCH, augment_on="workers").for_loader(validation=True)
    assert work.patch_size == PATCH and work.draw is None and work.augment is None
    seg = torch.tensor([[[-1, 0, 2]]], dtype=torch.int16)
    assert work.transforms(image=torch.zeros((1, 1, 3)), segmentation=seg)["segmentation"].tolist() == [[[0, 0, 2]]]


def test_on_workers_the_loader_cuts_enlarged_patches_and_runs_nnunetv2s_pipeline():
    augmentation = Augmentation(PATCH, masked_channels=[1], augment_on="workers", device=torch.device("cpu"))
    work = augmentation.for_loader(validation=False)
    assert work.patch_size == augmentation.settings.enlarged_patch != PATCH
    assert work.draw is None and work.augment is None and len(work.transforms.transforms) == len(TABLE)
    unmasked = Augmentation(PATCH, augment_on="workers").for_loader(validation=False)
    assert len(unmasked.transforms.transforms) == len(TABLE) - 1, "no channel masked, no masking transform"


def test_on_a_cpu_the_loader_draws_and_augments_the_batch_itself():
    augmentation = Augmentation(PATCH, augment_on="device", device=torch.device("cpu"))
    work = augmentation.for_loader(validation=False)
    assert work.transforms is None and work.draw == augmentation.batched.draw
    batch = a_cut_batch(augmentation)
    data, seg = work.augment(batch)
    assert data.shape == batch["data"].shape and int(seg.min()) == 0
    plain = {"data": data, "seg": seg}  # what the loader hands over: the device has nothing left to do
    assert augmentation.on_device(plain) == (data, seg)


def test_on_a_gpu_the_loader_only_draws_and_the_device_augments():
    """A CUDA trainer (the device object only: nothing runs on it here) leaves the batch to the device, which
    augments what the loader sends with its parameters."""
    augmentation = Augmentation(PATCH, augment_on="device", device=torch.device("cuda"))
    work = augmentation.for_loader(validation=False)
    assert work.augment is None and work.draw == augmentation.batched.draw
    batch = a_cut_batch(augmentation)
    expected = augmentation.augmented(a_cut_batch(augmentation))
    data, seg = augmentation.on_device(batch)
    assert torch.equal(data, expected[0]) and torch.equal(seg, expected[1]) and int(seg.min()) == 0


def test_an_unknown_place_is_refused_by_name():
    with pytest.raises(ValueError, match="'gpu'"):
        Augmentation(PATCH, augment_on="gpu")
