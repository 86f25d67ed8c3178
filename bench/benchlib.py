"""What the benchmarks share: the segflow workflow command and nnunetv2's environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def snakemake_command(workdir: Path, *config: str, cores: int = 2) -> list[str]:
    """``snakemake`` on segflow's Snakefile in ``workdir``, quiet, with ``key=value`` config overrides."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
        "-q",
    ]
    return command + (["--config", *config] if config else [])


def nnunet_env(base: Path, venv: Path | None = None, **extra: str) -> dict:
    """nnunetv2's folders under ``base``, torch.compile off, ``extra`` variables, its venv first on PATH."""
    env = dict(
        os.environ,
        nnUNet_raw=str(base / "raw"),
        nnUNet_preprocessed=str(base / "preprocessed"),
        nnUNet_results=str(base / "results"),
        nnUNet_compile="False",
        **extra,
    )
    if venv is not None:
        env["PATH"] = f"{Path(venv) / 'bin'}:{env['PATH']}"
    return env
