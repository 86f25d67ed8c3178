"""Which device the compute-heavy jobs use, decided without importing torch (the workflow parses fast)."""

import fcntl
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA driver loaded (so torch will see CUDA devices)."""
    return NVIDIA_DRIVER.exists()


def uses_gpu(device: str) -> bool:
    """Whether training with the configured ``device`` (auto, cuda, cpu) runs on a GPU here."""
    return device == "cuda" or (device == "auto" and gpu_present())


def resolve_device(device: str):
    """The torch device for ``auto`` (cuda if available, else cpu), ``cuda`` or ``cpu``."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def gpu_count() -> int:
    """NVIDIA GPUs on this machine, from the driver's /proc entries (no CUDA initialisation)."""
    folder = Path("/proc/driver/nvidia/gpus")
    return len(list(folder.iterdir())) if folder.is_dir() else 0


@contextmanager
def claimed_gpu(enabled: bool = True, count: int | None = None, lock_dir=None, poll_seconds: float = 5.0):
    """Hold one GPU of a workstation for the life of a job and let the job see only that one.

    Snakemake's ``gpu`` resource caps how many GPU jobs run at once but does not say which GPU each gets.
    Here a job takes an exclusive lock on the first free GPU index (a file lock, released when the job
    ends or dies) and sets ``CUDA_VISIBLE_DEVICES`` to it before CUDA starts. Nothing happens when a
    scheduler has already chosen (``CUDA_VISIBLE_DEVICES`` is set, as SLURM does) or there are fewer than
    two GPUs, or when not ``enabled`` (a job told to run on the CPU). Yields the index, or None.
    """
    count = gpu_count() if count is None else count
    if not enabled or "CUDA_VISIBLE_DEVICES" in os.environ or count < 2:
        yield None
        return
    folder = Path(lock_dir or tempfile.gettempdir()) / "segflow-gpu-locks"
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(count):
            handle = open(folder / f"gpu{index}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
            try:
                yield index
            finally:
                del os.environ["CUDA_VISIBLE_DEVICES"]
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(poll_seconds)
