"""GPU pinning on a workstation: concurrent jobs take different GPUs, and a scheduler's choice stands."""

import os
import subprocess
import sys

from segflow.device import claimed_gpu

CLAIM = (
    "import os, sys; from segflow.device import claimed_gpu\n"
    "with claimed_gpu(count=2, lock_dir=sys.argv[1]) as index:\n"
    "    print(index, os.environ['CUDA_VISIBLE_DEVICES'])\n"
)


def another_job(lock_dir) -> list[str]:
    """A second job, started as Snakemake starts jobs: in its own process, without a GPU chosen for it."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    result = subprocess.run([sys.executable, "-c", CLAIM, str(lock_dir)], capture_output=True, text=True, env=env)
    return result.stdout.split() or [result.stderr]


def test_concurrent_jobs_get_different_gpus(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with claimed_gpu(count=2, lock_dir=tmp_path) as index:
        assert index == 0 and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert another_job(tmp_path) == ["1", "1"]
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert another_job(tmp_path) == ["0", "0"], "a finished job's GPU is free again"


def test_a_scheduler_choice_or_a_single_gpu_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with claimed_gpu(count=4, lock_dir=tmp_path) as index:
        assert index is None and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with claimed_gpu(count=1, lock_dir=tmp_path) as index:
        assert index is None and "CUDA_VISIBLE_DEVICES" not in os.environ
