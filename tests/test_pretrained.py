"""Training from pretrained weights (``train.pretrained_weights``): nnU-Net v2's checkpoints (tests/data/nnunetv2_model,
trained by nnunetv2 2.8.1) and segflow's load into segflow's networks; heads that do not fit start afresh; a
checkpoint of another network is refused; a demo training started from one records it and runs to its end."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import NNUNET_MODEL, run_snakemake

from segflow.errors import InputError
from segflow.io import load_checkpoint, load_json
from segflow.networks import build_network
from segflow.plans import resolved_configuration
from segflow.train.pretrained import load_pretrained, weights_digest

MODEL = NNUNET_MODEL
CHECKPOINT = MODEL / "fold_0" / "checkpoint_final.pth"


def fixture_network(in_channels: int = 2, outputs: int = 3) -> torch.nn.Module:
    """segflow's network of the fixture's plan (nnunetv2's tiny 3d_fullres PlainConvUNet)."""
    torch.manual_seed(0)
    configuration = resolved_configuration(load_json(MODEL / "plans.json"), "3d_fullres")
    return build_network(configuration, in_channels, outputs)


def test_nnunets_weights_load_whole_when_the_labels_are_the_same():
    network = fixture_network()
    report = load_pretrained(network, CHECKPOINT)
    theirs = load_checkpoint(CHECKPOINT)["network_weights"]
    ours = network.state_dict()
    assert ours.keys() <= theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert report["skipped_heads"] == [] and report["loaded"] == len(ours) and report["framework"] == "nnU-Net v2"
    assert report["weights_sha256"] == weights_digest({k: theirs[k] for k in ours})


def test_heads_of_another_label_count_start_afresh_and_the_rest_is_loaded():
    fresh = fixture_network(outputs=2).state_dict()
    network = fixture_network(outputs=2)
    report = load_pretrained(network, CHECKPOINT)
    theirs, ours = load_checkpoint(CHECKPOINT)["network_weights"], network.state_dict()
    assert report["skipped_heads"] and all(".seg_layers." in k for k in report["skipped_heads"])
    for name, tensor in ours.items():
        expected = fresh[name] if name in report["skipped_heads"] else theirs[name]
        assert torch.equal(tensor, expected), name


def test_a_checkpoint_of_another_network_is_refused_with_its_name():
    with pytest.raises(InputError) as error:
        load_pretrained(fixture_network(in_channels=1), CHECKPOINT)
    message = str(error.value)
    # the first convolution, under the four names nnU-Net gives it (encoder, decoder.encoder; conv, all_modules.0)
    assert str(CHECKPOINT) in message and "0 parameters missing, 4 of another shape" in message, message
    assert "encoder.stages.0.0.convs.0.conv.weight: [8, 2, 1, 3, 3] for [8, 1, 1, 3, 3]" in message, message


def test_a_demo_training_starts_from_pretrained_weights_and_runs_to_its_end(demo_run, tmp_path):
    """The demo's 2d fold 0 trained again from its fold 1 weights (2d: the same loading as 3d, in a third of the
    time): the fold folder records the source and the digest of the weights right after loading, which is the
    source's, and the training runs its epochs."""
    workdir = tmp_path / "demo"
    shutil.copytree(demo_run, workdir, symlinks=True)
    results = workdir / "results" / "Task900_SegflowDemo"
    source = tmp_path / "pretrained.pt"
    shutil.copy(results / "train" / "2d" / "fold_1" / "checkpoint_final.pt", source)
    fold = results / "train" / "2d" / "fold_0"
    before = load_checkpoint(fold / "checkpoint_final.pt")
    shutil.rmtree(fold)
    target = str(fold.relative_to(workdir) / "checkpoint_final.pt")
    run_snakemake(workdir, target, config={"train": f"{{pretrained_weights: {source}}}"})
    record = json.loads((fold / "pretrained.json").read_text())
    assert record["source"] == str(source.resolve()) and record["framework"] == "segflow"
    assert record["weights_sha256"] == weights_digest(load_checkpoint(source)["network_weights"])
    assert record["skipped_heads"] == []
    after = load_checkpoint(fold / "checkpoint_final.pt")
    assert len(after["logging"]["train_loss"]) == len(before["logging"]["train_loss"])  # the demo's 3 epochs
    weights = before["network_weights"]
    assert any(not torch.equal(after["network_weights"][k], weights[k]) for k in weights)
