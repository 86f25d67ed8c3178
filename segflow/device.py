"""Which device the compute-heavy jobs use, decided without importing torch (the workflow parses fast)."""

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
