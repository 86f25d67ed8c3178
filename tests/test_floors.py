"""segflow at the lowest numpy and torch that pyproject.toml allows (tests/floors.py), in the environment of
SEGFLOW_PLAIN_PYTHON, which .ci/run makes with them: checkpoints written with numpy 1 load with numpy 2 and the
other way round (numpy 2 names its scalar reconstructor ``numpy._core``, numpy 1 ``numpy.core``), and a training
killed in the middle resumes and ends with a checkpoint this environment loads."""

from __future__ import annotations

import subprocess
import zipfile

import pytest
import torch
from conftest import NNUNET_MODEL, required
from floors import floors
from packaging.version import Version
from test_train_resume import dataset, finish, kill_after_two_epochs, start_training  # noqa: F401 (a fixture)

from segflow.io import load_checkpoint

VERSIONS = "import numpy, torch; print(numpy.__version__, torch.__version__)"


def same_release(installed: str, floor: str) -> bool:
    """``2.5.0+cu124`` is release 2.5 (and 1.26.0 is 1.26)."""
    return Version(Version(installed).base_version) == Version(floor)


@pytest.fixture(scope="module")
def floor_python(plain_python) -> str:
    """SEGFLOW_PLAIN_PYTHON, checked to hold the floors: newer versions would make these tests prove nothing."""
    numpy, torch_version = subprocess.run([plain_python, "-c", VERSIONS], capture_output=True, text=True).stdout.split()
    wanted = floors()
    if not (same_release(numpy, wanted["numpy"]) and same_release(torch_version, wanted["torch"])):
        pins = " ".join(f"{k}=={v}" for k, v in wanted.items())
        required(f"SEGFLOW_PLAIN_PYTHON has numpy {numpy} and torch {torch_version}; make it with {pins}")
    return plain_python


def run(python: str, code: str) -> str:
    result = subprocess.run([python, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_checkpoints_with_numpy_scalars_load_across_numpy_versions(floor_python, tmp_path):
    nnunet_checkpoint = NNUNET_MODEL / "fold_0" / "checkpoint_final.pth"  # written with numpy 2
    written = tmp_path / "numpy_1.pt"
    code = f"""
import numpy as np, torch
from segflow.io import load_checkpoint
nnunet = load_checkpoint({str(nnunet_checkpoint)!r})
print(type(nnunet["logging"]["ema_fg_dice"][0]).__name__, repr(float(nnunet["logging"]["ema_fg_dice"][-1])))
torch.save({{"loss": np.float32(0.25), "epoch": np.int64(3), "weights": torch.arange(3.0)}}, {str(written)!r})
"""
    kind, ema = run(floor_python, code).split()
    expected = load_checkpoint(nnunet_checkpoint)["logging"]["ema_fg_dice"][-1]
    assert kind == "float32" and float(ema) == float(expected)
    with zipfile.ZipFile(written) as archive:
        pickle = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"numpy.core.multiarray" in pickle and b"numpy._core" not in pickle  # numpy 1's name
    loaded = load_checkpoint(written)
    assert loaded["loss"] == 0.25 and loaded["epoch"] == 3 and torch.equal(loaded["weights"], torch.arange(3.0))


def test_a_killed_training_resumes_with_the_floors(dataset, floor_python, tmp_path):  # noqa: F811
    out = tmp_path / "fold"
    kill_after_two_epochs(start_training(dataset, out, python=floor_python), out)
    killed_at = load_checkpoint(out / "checkpoint_latest.pt")["current_epoch"]
    output = finish(start_training(dataset, out, python=floor_python))
    assert f"resuming {out / 'checkpoint_latest.pt'} after epoch {killed_at}" in output, output
    final = load_checkpoint(out / "checkpoint_final.pt")
    assert final["current_epoch"] == 4 and all(torch.isfinite(w).all() for w in final["network_weights"].values())
