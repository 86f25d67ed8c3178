"""segflow's U-Nets against nnU-Net v2's (dynamic_network_architectures, via nnunetv2 2.8.1): the same
state-dict names and shapes, and the same outputs for the same weights. Fixtures from
tests/nnunetv2_fixture/make_network_fixture.py; CI has no nnunetv2."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segflow.networks import build_network

DATA = Path(__file__).parent / "data" / "nnunetv2"
sys.path.insert(0, str(Path(__file__).parent / "nnunetv2_fixture"))
from make_network_fixture import FORWARD_CASES, forward_input, reproducible_weights  # noqa: E402

RECORDS = json.loads((DATA / "networks.json").read_text())["networks"]


def record_id(record) -> str:
    return f"{record['case']}-{record['planner']}-{record['configuration']}"


def built(record, deep_supervision=True):
    configuration = {"architecture": record["architecture"]}
    return build_network(configuration, record["in_channels"], record["num_classes"], deep_supervision)


def names_and_shapes(pairs) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(shape)) for name, shape in pairs]


@pytest.mark.parametrize("record", RECORDS, ids=record_id)
def test_state_dict_names_and_shapes_equal_nnunets(record):
    network = built(record)
    ours = [(k, tuple(v.shape)) for k, v in network.state_dict().items()]
    assert ours == names_and_shapes(record["state_dict"])
    assert [(k, tuple(v.shape)) for k, v in network.named_parameters()] == names_and_shapes(record["parameters"])


def test_an_nnunet_state_dict_loads_strictly_and_aliases_share_storage():
    record = next(r for r in RECORDS if r["planner"] == "resenc_m")
    network = built(record)
    state = {name: torch.full(shape, 0.5) for name, shape in record["state_dict"]}
    network.load_state_dict(state, strict=True)
    stem = network.encoder.stem.convs[0]
    assert stem.conv.weight is stem.all_modules[0].weight
    assert network.decoder.encoder is network.encoder
    assert len(list(network.parameters())) == len(record["parameters"])


@pytest.mark.parametrize("index", range(FORWARD_CASES), ids=[record_id(r) for r in RECORDS[:FORWARD_CASES]])
def test_outputs_equal_nnunets_for_the_same_weights(index):
    record = RECORDS[index]
    network = built(record)
    reproducible_weights(network)
    network.eval()
    with torch.no_grad():
        outputs = network(forward_input(record["architecture"], record["in_channels"]))
    expected = np.load(DATA / "network_outputs.npz", allow_pickle=False)
    keys = sorted((k for k in expected.files if k.startswith(f"{index}_")), key=lambda k: int(k.split("_")[1]))
    assert len(outputs) == len(keys) > 1
    for output, key in zip(outputs, keys, strict=True):
        np.testing.assert_allclose(output.numpy(), expected[key], rtol=1e-4, atol=1e-4)


def test_residual_blocks_start_as_their_skip():
    record = next(r for r in RECORDS if r["planner"] == "resenc_m" and r["configuration"] == "2d")
    network = built(record)
    block = network.encoder.stages[1].blocks[1]
    assert torch.all(block.conv2.norm.weight == 0) and torch.all(block.conv2.norm.bias == 0)
    x = torch.randn(1, block.conv1.conv.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x.clone()), torch.nn.functional.leaky_relu(x, 0.01))
