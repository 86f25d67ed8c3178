"""Training building blocks on hand-made inputs: network shapes, loss values, schedules, sampling."""

import math
import threading
import time

import numpy as np
import pytest
import torch

from segflow.io import save_json, save_npy
from segflow.networks import build_network
from segflow.plan import architecture, topology
from segflow.preprocess import class_locations
from segflow.train.data import Case, PatchLoader, Prefetcher, forced_foreground
from segflow.train.loss import DeepSupervisionLoss, DiceBCELoss, DiceCELoss, deep_supervision_weights, region_targets
from segflow.train.optimizer import poly_lr
from segflow.train.patch_geometry import AugmentationSettings


def configuration(spacing, patch):
    topo = topology(spacing, patch)
    assert topo.patch_size == list(patch)
    return {"architecture": architecture(len(spacing), topo)}


@pytest.mark.parametrize(
    ("spacing", "patch", "expected"),
    [
        ([1.0, 1.0], [56, 40], [(56, 40), (28, 20), (14, 10)]),  # Hippocampus 2d, 4 stages
        ([1.0, 1.0, 1.0], [40, 56, 40], [(40, 56, 40), (20, 28, 20), (10, 14, 10)]),  # Hippocampus 3d_fullres
        # Anisotropic: 1x3x3 kernels and (1, 2, 2) strides until z is within a factor 2 of the finest spacing.
        ([3.0, 0.75, 0.75], [12, 64, 64], [(12, 64, 64), (12, 32, 32), (12, 16, 16), (6, 8, 8)]),
    ],
)
def test_network_output_shapes(spacing, patch, expected):
    config = configuration(spacing, patch)
    kwargs = config["architecture"]["arch_kwargs"]
    if len(spacing) == 3 and spacing[0] == 3.0:
        assert kwargs["kernel_sizes"][:2] == [[1, 3, 3], [1, 3, 3]]
        assert kwargs["strides"][:3] == [[1, 1, 1], [1, 2, 2], [1, 2, 2]]
    network = build_network(config, in_channels=2, num_classes=3)
    with torch.no_grad():
        outputs = network(torch.zeros(2, 2, *patch))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, *shape) for shape in expected]
    network.deep_supervision = False
    with torch.no_grad():
        assert tuple(network(torch.zeros(1, 2, *patch)).shape) == (1, 3, *patch)


def test_weights_are_kaiming_initialised_with_zero_bias():
    network = build_network(configuration([1.0, 1.0, 1.0], [16, 16, 16]), 1, 2)
    conv = network.encoder.stages[1][0].convs[0].conv
    fan_in = conv.weight[0].numel()
    expected_std = math.sqrt(2 / (1 + 0.01**2)) / math.sqrt(fan_in)
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.1)
    assert torch.all(conv.bias == 0)


def test_deep_supervision_weights():
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0])
    assert np.round(deep_supervision_weights(5), 3).tolist() == [0.533, 0.267, 0.133, 0.067, 0.0]


def test_dice_ce_on_hand_made_tensors():
    target = torch.tensor([[[[0, 1], [1, 2]]]])  # B=1, one 2 x 2 image
    uniform = torch.zeros(1, 3, 2, 2)  # softmax 1/3 everywhere
    # CE = ln 3; Dice class 1 = (2 * 2/3) / (2 + 4/3) = 0.4, class 2 = (2 * 1/3) / (1 + 4/3) = 2/7.
    loss = DiceCELoss(batch_dice=False)(uniform, target)
    assert loss.item() == pytest.approx(math.log(3) - (0.4 + 2 / 7) / 2, abs=1e-5)
    perfect = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 3, 1, 2).float() * 100
    assert DiceCELoss(batch_dice=False)(perfect, target).item() == pytest.approx(-1.0, abs=1e-5)
    # A second sample of all ones: batch Dice pools both samples, plain Dice averages them.
    targets = torch.cat([target, torch.ones_like(target)])
    uniform2 = torch.zeros(2, 3, 2, 2)
    batch = DiceCELoss(batch_dice=True)(uniform2, targets).item()
    assert batch == pytest.approx(math.log(3) - (12 / 26 + 2 / 11) / 2, abs=1e-5)
    plain = DiceCELoss(batch_dice=False)(uniform2, targets).item()
    assert plain == pytest.approx(math.log(3) - (0.4 + 2 / 7 + 0.5 + 0.0) / 4, abs=1e-5)


def test_ignore_label_is_left_out_of_both_terms():
    target = torch.tensor([[[[0, 1], [3, 3]]]])  # 3 = ignore
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0, 0, 0] = logits[0, 1, 0, 1] = 100
    logits[0, 2, 1, :] = 100  # wrong, but ignored
    assert DiceCELoss(batch_dice=False, ignore_label=3)(logits, target).item() == pytest.approx(-1.0, abs=1e-5)


def test_regions_for_nested_brats_labels():
    seg = torch.tensor([0, 1, 2, 3, 4], dtype=torch.int16).reshape(1, 1, 5)
    regions = [(1, 2, 3), (2, 3), (3,)]
    target = region_targets(seg, regions, ignore_label=4)
    assert target[0].tolist() == [[0, 1, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]
    target = region_targets(seg[..., :4], regions)
    logits = target.float() * 200 - 100  # sigmoid = target
    assert DiceBCELoss(batch_dice=True)(logits, target).item() == pytest.approx(-1.0, abs=1e-5)


def test_deep_supervision_loss_weights_outputs():
    loss = DeepSupervisionLoss(DiceCELoss(batch_dice=False), [2 / 3, 1 / 3, 0])
    target = torch.tensor([[[[0, 1], [1, 2]]]])
    outputs = [torch.zeros(1, 3, 2, 2)] * 3
    expected = math.log(3) - (0.4 + 2 / 7) / 2
    assert loss(outputs, [target] * 3).item() == pytest.approx(expected, abs=1e-5)


def test_poly_learning_rate():
    assert poly_lr(0, 1000) == pytest.approx(1e-2)
    assert poly_lr(500, 1000) == pytest.approx(1e-2 * 0.5**0.9)
    assert poly_lr(999, 1000) == pytest.approx(1.995e-5, rel=1e-3)


@pytest.mark.parametrize(("batch_size", "forced"), [(2, 1), (9, 3), (12, 4), (366, 121)])
def test_share_of_foreground_forced_samples(batch_size, forced):
    assert sum(forced_foreground(j, batch_size) for j in range(batch_size)) == forced


def test_enlarged_patches_equal_nnunetv2():
    # Values printed by nnunetv2 2.8.1's get_patch_size for the same patches and rotations.
    assert AugmentationSettings([40, 56, 40]).enlarged_patch == [73, 80, 64]
    anisotropic = AugmentationSettings([20, 256, 256])
    assert anisotropic.dummy_2d and anisotropic.enlarged_patch == [20, 301, 301]
    assert AugmentationSettings([56, 40]).enlarged_patch == [65, 65]


def write_case(folder, name, shape=(10, 20, 20)):
    seg = np.zeros((1, *shape), np.int8)
    seg[0, 2:4, 3:5, 15:18] = 1
    save_npy(np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32), folder / f"{name}.npy")
    save_npy(seg, folder / f"{name}_seg.npy")
    save_json({"class_locations": class_locations(seg, [1, 2])}, folder / f"{name}.json")


def test_loader_forces_foreground_into_the_patch_and_pads_with_minus_one(tmp_path):
    write_case(tmp_path, "a")
    case = Case(tmp_path, "a")
    np.random.seed(0)
    loader = PatchLoader([case], 3, [12, 16, 16], [8, 12, 12], is_2d=False)
    for _ in range(20):
        batch = loader.generate_train_batch()
        assert batch["data"].shape == (3, 1, 12, 16, 16) and batch["seg"].shape == (3, 1, 12, 16, 16)
        assert (batch["seg"][2] == 1).any(), "the last sample of a batch of 3 is forced to hold foreground"
    assert (batch["seg"] == -1).any()  # the 10-voxel axis is padded to the 12-voxel patch
    flat = PatchLoader([case], 2, [16, 16], [12, 12], is_2d=True).generate_train_batch()
    assert flat["data"].shape == (2, 1, 16, 16) and (flat["seg"][1] == 1).any()


def test_batches_prepared_ahead_in_a_thread_come_in_order_and_closing_waits_for_the_one_in_preparation():
    made, threads = [], set()

    def prepare():
        threads.add(threading.get_ident())
        time.sleep(0.01)
        made.append(len(made))
        return torch.tensor([made[-1]]), [torch.tensor([-made[-1]])]

    ahead = Prefetcher(prepare, torch.device("cpu"), ahead=True)
    taken = [next(ahead) for _ in range(5)]
    ahead.close()
    assert [int(d) for d, _ in taken] == [0, 1, 2, 3, 4] and [int(t[0]) for _, t in taken] == [0, -1, -2, -3, -4]
    finished = len(made)
    time.sleep(0.05)
    assert finished in (5, 6) and len(made) == finished, "at most one batch ahead, none made after close"
    assert threading.get_ident() not in threads, "prepared in the background thread"
    inline = Prefetcher(prepare, torch.device("cpu"))
    assert int(next(inline)[0]) == finished and len(made) == finished + 1, "on a CPU, made when asked for"
    inline.close()
