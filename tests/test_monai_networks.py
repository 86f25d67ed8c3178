"""MONAI's SwinUNETR and SegResNetDS on nnU-Net's plans: the plans they make, the patch sizes they take, the
weights they share with MONAI's own classes, and the recipes they train with."""

import math

import pytest
import torch
from monai.networks.nets import SegResNetDS, SwinUNETR
from test_plan import load_case

from segflow.networks import NETWORKS, build_network, family_of, padded_patch, parameter_count, with_network
from segflow.plan import plan_experiment
from segflow.plans import network_class, resolved_configuration
from segflow.train.loss import deep_supervision_weights, target_pyramid
from segflow.train.optimizer import build_optimizer, learning_rate, training_recipe
from segflow.train.settings import TrainSettings

KEPT = ("data_identifier", "patch_size", "batch_size", "spacing", "normalization_schemes", "batch_dice")


def anisotropic_plans():
    case = load_case("anisotropic")
    return plan_experiment(case["fingerprint"], case["dataset_json"])


@pytest.mark.parametrize("network, cls", [("swinunetr", "SwinUNETR"), ("segresnet", "SegResNetDS")])
def test_a_network_replaces_only_the_architecture_of_every_configuration(network, cls):
    plans = anisotropic_plans()
    replaced = with_network(plans, network)
    assert replaced["plans_name"] == plans["plans_name"]
    for name in plans["configurations"]:
        ours, theirs = resolved_configuration(replaced, name), resolved_configuration(plans, name)
        assert network_class(ours) == cls
        assert {k: ours[k] for k in KEPT} == {k: theirs[k] for k in KEPT}
        assert ours["architecture"]["arch_kwargs"]["spatial_dims"] == len(theirs["patch_size"])
    assert with_network(plans, "default") is plans
    with pytest.raises(ValueError, match="unknown network 'unetr'"):
        with_network(plans, "unetr")


def small_configuration(network, name, patch):
    configuration = resolved_configuration(with_network(anisotropic_plans(), network), name)
    return {**configuration, "patch_size": patch}


def test_swinunetr_takes_any_patch_and_keeps_monais_weights():
    """Pads a 2D patch of 56 x 40 to 64 x 64 (SwinUNETR takes multiples of 32) and crops the output back; its
    state dict is MONAI's SwinUNETR's, which gives the same output on a patch it takes itself."""
    configuration = small_configuration("swinunetr", "2d", [56, 40])
    torch.manual_seed(0)
    network = build_network(configuration, 2, 3).eval()
    assert network.divisors() == [32, 32] and network.output_scales == [[1.0, 1.0]]
    x = torch.randn(2, 2, 56, 40)
    with torch.no_grad():
        assert network(x).shape == (2, 3, 56, 40)
    monai = SwinUNETR(in_channels=2, out_channels=3, **configuration["architecture"]["arch_kwargs"]).eval()
    monai.load_state_dict(network.state_dict(), strict=True)
    square = torch.randn(1, 2, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(network(square), monai(square))
        # Padding is zeros at the end of each axis: the cropped output is that of the zero-padded image.
        padded = torch.nn.functional.pad(x, (0, 24, 0, 8))
        torch.testing.assert_close(network(x), monai(padded)[..., :56, :40])


def test_segresnet_downsamples_by_the_spacing_and_its_outputs_match_the_loss_targets():
    """The anisotropic plan's 3d_fullres (spacing 2.95 x 0.75 x 0.75): SegResNetDS keeps the coarse axis at
    full resolution in its first downsampling, as nnU-Net's strides do; its four deep-supervision outputs have
    the sizes of the targets the loss compares them with, on a patch it must pad (7 x 37 x 29)."""
    configuration = small_configuration("segresnet", "3d_fullres", [7, 37, 29])
    network = build_network(configuration, 1, 2)
    assert network.divisors() == [8, 16, 16]
    assert network.output_scales == [[1.0, 1.0, 1.0], [1.0, 0.5, 0.5], [0.5, 0.25, 0.25], [0.25, 0.125, 0.125]]
    x = torch.randn(1, 1, 7, 37, 29)
    with torch.no_grad():
        outputs = network.train()(x)
        also_in_eval = network.eval()(x)
    targets = target_pyramid(torch.zeros(1, 1, 7, 37, 29, dtype=torch.int16), network.output_scales)
    assert [o.shape[2:] for o in outputs] == [t.shape[2:] for t in targets]
    assert [o.shape for o in also_in_eval] == [o.shape for o in outputs]
    for_prediction = build_network(configuration, 1, 2, deep_supervision=False).eval()
    assert for_prediction.output_scales == [[1.0, 1.0, 1.0]]
    with torch.no_grad():
        assert for_prediction(x).shape == (1, 2, 7, 37, 29)
    kwargs = dict(configuration["architecture"]["arch_kwargs"])
    kwargs["resolution"] = tuple(kwargs["resolution"])
    monai = SegResNetDS(in_channels=1, out_channels=2, **{**kwargs, "blocks_down": tuple(kwargs["blocks_down"])})
    assert list(monai.state_dict()) == list(network.state_dict())


def test_a_network_without_deep_supervision_weighs_its_one_output_fully():
    assert deep_supervision_weights(1) == [1.0]


def test_recipes():
    """SwinUNETR: AdamW 1e-4 (eps 1e-4, weight decay 3e-5), nnU-Net's poly schedule. SegResNet: AdamW 2e-4
    (weight decay 1e-5), warmup over 1 % of the epochs, then a cosine to 0. nnU-Net's networks: SGD from the
    train settings."""
    plans = anisotropic_plans()
    settings = TrainSettings(initial_lr=5e-3)
    parameters = [torch.nn.Parameter(torch.zeros(1))]

    swin = training_recipe(resolved_configuration(with_network(plans, "swinunetr"), "3d_fullres"), settings)
    optimizer = build_optimizer(swin, parameters)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["eps"] == 1e-4 and optimizer.defaults["weight_decay"] == 3e-5
    assert learning_rate(swin, 500, 1000) == pytest.approx(1e-4 * 0.5**0.9)

    segresnet = training_recipe(resolved_configuration(with_network(plans, "segresnet"), "3d_fullres"), settings)
    assert build_optimizer(segresnet, parameters).defaults["weight_decay"] == 1e-5
    assert [learning_rate(segresnet, e, 300) for e in (0, 1, 2)] == pytest.approx([2e-4 / 3, 4e-4 / 3, 2e-4])
    assert learning_rate(segresnet, 3, 300) == pytest.approx(2e-4)
    assert learning_rate(segresnet, 3 + 297 // 2, 300) == pytest.approx(
        2e-4 * 0.5 * (1 + math.cos(math.pi * 148 / 297))
    )

    unet = training_recipe(resolved_configuration(plans, "3d_fullres"), settings)
    sgd = build_optimizer(unet, parameters)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["lr"] == 5e-3


@pytest.mark.parametrize("planner", ["default", "resenc_m"])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_parameter_counts_from_the_plans_equal_the_built_networks(planner, network):
    """The workflow sizes a job's memory from what each network family of the registry reads from the plans
    without building the network: every configuration of an anisotropic dataset's plans (SegResNetDS keeps kernels
    of 1 along the fine axes there), 2 and 4 input channels."""
    case = load_case("anisotropic")
    plans = with_network(plan_experiment(case["fingerprint"], case["dataset_json"], planner=planner), network)
    # Built without memory, except SwinUNETR: its initialisation reads values.
    device = torch.device("cpu" if network == "swinunetr" else "meta")
    for name in plans["configurations"]:
        configuration = resolved_configuration(plans, name)
        for channels, classes in ((2, 3), (4, 5)):
            with device:
                built = build_network(configuration, channels, classes)
            expected = sum(p.numel() for p in built.parameters())
            assert parameter_count(configuration, channels, classes) == expected, (name, channels)
        assert family_of(configuration) is NETWORKS[network]
        # The input the network pads a patch to, which its activations follow.
        divisors = built.divisors() if hasattr(built, "divisors") else [1] * len(configuration["patch_size"])
        padded = [math.ceil(p / d) * d for p, d in zip(configuration["patch_size"], divisors, strict=True)]
        assert padded_patch(configuration) == padded, name
