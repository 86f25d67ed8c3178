"""No pickle ever runs: a pickle planted where metadata is expected, and a model file whose pickle carries a code
payload, are both refused with an error naming the file, and the payload never executes."""

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import Payload

from segflow.cli import main

DEMO = "Task900_SegflowDemo"


@pytest.fixture
def model(demo_run, tmp_path) -> Path:
    """A copy of the demo's model folder (metadata and the 3d_fullres fold 0 weights)."""
    source, copy = demo_run / "results" / DEMO, tmp_path / "model"
    for name in ("plans.json", "dataset.json", "selection.json", "train/3d_fullres/fold_0/checkpoint_final.pt"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, copy / name)
    return copy


def predict(demo_run, model, tmp_path, capsys) -> str:
    images = demo_run / "resources" / DEMO / "imagesTs"
    args = ["predict", "-i", str(images), "-o", str(tmp_path / "out"), "-m", str(model), "-c", "3d_fullres"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "-f", "0"])
    assert exit_info.value.code == 1
    return capsys.readouterr().err


def test_a_pickle_in_place_of_metadata_is_refused_and_never_runs(demo_run, model, tmp_path, capsys):
    marker = tmp_path / "metadata_payload_ran"
    (model / "selection.json").write_bytes(pickle.dumps(Payload(marker)))
    message = predict(demo_run, model, tmp_path, capsys)
    assert f"file {model / 'selection.json'}" in message and "is not valid JSON" in message, message
    assert not marker.exists()
    pickle.loads((model / "selection.json").read_bytes())  # the payload is real: unpickled, it runs
    assert marker.exists()


def test_a_model_file_carrying_a_pickle_payload_is_refused_and_never_runs(demo_run, model, tmp_path, capsys):
    marker = tmp_path / "checkpoint_payload_ran"
    checkpoint = model / "train" / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    weights = torch.load(checkpoint, weights_only=True)
    torch.save({**weights, "network_weights": Payload(marker)}, checkpoint)
    message = predict(demo_run, model, tmp_path, capsys)
    assert f"file {checkpoint}" in message and "could run code, so it was refused" in message, message
    assert not marker.exists() and not (tmp_path / "out" / "demo_500.nii.gz").exists()
    torch.load(checkpoint, weights_only=False)  # the payload is real: loaded without the guard, it runs
    assert marker.exists()
