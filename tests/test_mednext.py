"""MedNeXt (segflow.networks.mednext, its family segflow.networks.families.mednext): its sizes against the paper's
parameter counts, its blocks' shapes, deep supervision, padding, and its plans and recipe."""

from types import SimpleNamespace

import pytest
import torch
from conftest import assert_every_job_used_less_than_it_declared, load, run_snakemake, tiny_run

from segflow.networks import NETWORKS, build_network, family_of, padded_patch, parameter_count, with_network
from segflow.networks.families.mednext import SIZES
from segflow.networks.mednext import MedNeXtBlock
from segflow.plans import resolved_configuration
from segflow.train.optimizer import build_optimizer, training_recipe

MEDNEXT = NETWORKS["mednext"]
#: The MedNeXt paper's Table 1 (Roy et al., MICCAI 2023, arXiv:2303.09975): parameters of each size with kernel 3,
#: in millions (S and L as issue 34 recalls them; B and M as recalled from the same table).
PAPER_PARAMETERS_M = {"S": 5.6, "B": 10.5, "M": 17.6, "L": 61.8}


def configuration(patch, size="L", batch=2):
    planned = {"patch_size": list(patch), "spacing": [1.0] * len(patch), "batch_size": batch}
    return {**planned, "architecture": MEDNEXT.architecture(planned, size)}


@pytest.mark.parametrize("size", list(SIZES))
def test_each_size_has_the_parameters_the_paper_reports(size):
    conf = configuration((64, 64, 64), size)
    with torch.device("meta"):
        network = build_network(conf, 1, 2)
    built = sum(p.numel() for p in network.parameters())
    assert parameter_count(conf, 1, 2) == built
    assert abs(built / 1e6 - PAPER_PARAMETERS_M[size]) < 0.05, built


@pytest.mark.parametrize("dim", [2, 3])
def test_blocks_keep_double_and_halve_the_grid_as_the_paper_draws_them(dim):
    x = torch.randn(2, 8, *[6] * dim)
    same = MedNeXtBlock(8, 8, 2, 3, dim)
    assert same(x).shape == x.shape
    with torch.no_grad():  # the residual: with the compression zeroed, a block passes its input on
        same.conv3.weight.zero_()
        same.conv3.bias.zero_()
    assert torch.equal(same(x), x)
    assert MedNeXtBlock(8, 16, 2, 3, dim, "down")(x).shape == (2, 16, *[3] * dim)
    assert MedNeXtBlock(8, 4, 2, 3, dim, "up")(x).shape == (2, 4, *[12] * dim)
    assert isinstance(MedNeXtBlock(8, 4, 2, 3, dim, "up").res_conv, torch.nn.modules.conv._ConvTransposeNd)
    assert MedNeXtBlock(8, 8, 2, 3, dim).norm.num_groups == 8  # one group per channel


@pytest.mark.parametrize("patch", [(14, 48, 40), (40, 56)])
def test_a_patch_is_padded_and_every_deep_supervision_output_cropped_to_its_scale(patch):
    conf = configuration(patch, "S")
    torch.manual_seed(0)
    network = build_network(conf, 2, 3)
    assert padded_patch(conf) == [32 * -(-p // 32) for p in patch]
    outputs = network(torch.randn(2, 2, *patch))
    assert len(outputs) == 5 and network.output_scales[1] == [0.5] * len(patch)
    for output, scale in zip(outputs, network.output_scales, strict=True):
        assert list(output.shape) == [2, 3, *[round(p * s) for p, s in zip(patch, scale, strict=True)]]
    single = build_network(conf, 2, 3, deep_supervision=False)
    assert single(torch.randn(1, 2, *patch)).shape == (1, 3, *patch)
    assert single.output_scales == [[1.0] * len(patch)]
    single.load_state_dict(network.state_dict())  # a model trained with deep supervision predicts without it


def test_the_mednext_plans_keep_nnunets_data_and_train_with_its_authors_recipe():
    plans = {
        "plans_name": "nnUNetPlans",
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "patch_size": [14, 48, 48],
                "batch_size": 2,
                "spacing": [2.0, 1.0, 1.0],
                "architecture": {"network_class_name": "x.PlainConvUNet", "arch_kwargs": {}},
            }
        },
    }
    mednext = resolved_configuration(with_network(plans, "mednext"), "3d_fullres")
    assert family_of(mednext) is MEDNEXT
    assert mednext["architecture"]["arch_kwargs"]["size"] == "L"
    assert mednext["architecture"]["arch_kwargs"]["exp_r"] == [3, 4, 8, 8, 8, 8, 8, 4, 3]
    assert {k: mednext[k] for k in ("data_identifier", "patch_size", "batch_size")} == {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "patch_size": [14, 48, 48],
        "batch_size": 2,
    }
    settings = SimpleNamespace(initial_lr=1e-2, weight_decay=3e-5, momentum=0.99)
    recipe = training_recipe(mednext, settings)
    optimizer = build_optimizer(recipe, [torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["eps"] == 1e-4
    assert optimizer.defaults["weight_decay"] == 3e-5 and recipe.schedule == "poly"


def test_a_decoder_level_adds_the_encoders_output_of_its_level():
    """With every up block's output zeroed, the decoder still sees the input through the skips (added, not
    concatenated: the decoder blocks keep the level's width)."""
    torch.manual_seed(0)
    network = build_network(configuration((32, 32, 32), "S"), 1, 2, deep_supervision=False)
    with torch.no_grad():
        for up in network.up:
            for layer in (up.conv3, up.res_conv):
                layer.weight.zero_()
                layer.bias.zero_()
    first, second = (network(torch.randn(1, 1, 32, 32, 32)) for _ in range(2))
    assert not torch.allclose(first, second)
    assert network.decoder[0][0].conv1.in_channels == network.encoder[0][0].conv1.out_channels == 32


@pytest.mark.slow
def test_mednext_trains_in_the_demos_cross_validation_and_joins_its_selection_and_report(tmp_path):
    """``networks: [default, mednext]`` on the demo's 2d configuration with a tiny budget: MedNeXt L trains on the
    default plans' data, is cross-validated, ensembled and selected among the others, the report shows it, and
    its jobs used less memory than they declared (61.6 M parameters with AdamW's two moments, and the
    activations of five 64 x 64 samples)."""
    config = tiny_run(configurations="[2d]", networks="[default,mednext]")
    run_snakemake(tmp_path, config=config)
    out = tmp_path / "results" / "Task900_SegflowDemo"
    default, mednext = (load(out / name)["configurations"]["2d"] for name in ("plans.json", "plans_mednext.json"))
    assert mednext["architecture"]["network_class_name"] == "segflow.networks.mednext.MedNeXt"
    same = ("data_identifier", "patch_size", "batch_size", "spacing")
    assert {k: mednext[k] for k in same} == {k: default[k] for k in same}
    assert (out / "train" / "2d-mednext" / "fold_0" / "validation" / "summary.json").is_file()
    scores = load(out / "selection.json")["scores"]
    assert set(scores) == {"2d", "2d-mednext", "ensemble__2d__2d-mednext"}
    assert "MedNeXt" in (out / "report" / "plans.html").read_text()
    assert "2d-mednext" in (out / "report" / "crossval.html").read_text()
    assert {"train", "validate"} <= assert_every_job_used_less_than_it_declared(tmp_path, out, config)
