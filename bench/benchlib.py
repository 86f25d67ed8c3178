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


def save_nnunet_case(folder: Path, case: str, data, seg, locations: dict, patch_size) -> None:
    """One preprocessed case in nnunetv2 2.8.1's own storage (.b2nd arrays + properties), written by its own
    code: ``locations`` maps a label to segflow's ``class_locations`` (z, y, x rows). Needs nnunetv2."""
    import numpy as np
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2

    properties = {
        "class_locations": {
            int(k): np.array([[0, *v] for v in vs], dtype=np.int64).reshape(-1, 4) for k, vs in locations.items()
        }
    }
    seg = seg.astype(np.int16)
    blocks, chunks = comp_blosc2_params(data.shape, tuple(patch_size), data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, tuple(patch_size), seg.itemsize)
    nnUNetDatasetBlosc2.save_case(
        data,
        seg,
        properties,
        str(Path(folder) / case),
        chunks=chunks,
        blocks=blocks,
        chunks_seg=chunks_seg,
        blocks_seg=blocks_seg,
    )


def nnunet_plans(plans: dict, dataset_name: str) -> dict:
    """segflow's plans.json as nnunetv2 reads it: the same content under nnunetv2's dataset name."""
    plans = {k: v for k, v in plans.items() if k != "gpu_memory_target_gb"}
    plans["dataset_name"] = dataset_name
    return plans


def hippocampus_default() -> Path:
    """MSD Hippocampus: $SEGFLOW_HIPPOCAMPUS, else ../shared/data/Task04_Hippocampus beside the checkout."""
    return Path(os.environ.get("SEGFLOW_HIPPOCAMPUS", REPO.parent / "shared" / "data" / "Task04_Hippocampus"))


def preprocessed_hippocampus(hippocampus: Path, work: Path, results: Path | None = None) -> Path:
    """segflow's results folder for Hippocampus 3d_fullres (plans.json, splits.json, raw/dataset.json,
    preprocessed/): ``results`` if given (e.g. carried to a GPU machine), else a workflow run in ``work``."""
    if results:
        return Path(results).resolve()
    import subprocess

    workdir = Path(work) / "segflow"
    command = snakemake_command(workdir, f"dataset={hippocampus}", "folds=[]", "configurations=[3d_fullres]")
    subprocess.run(command, check=True, capture_output=True)
    return workdir / "results" / Path(hippocampus).name
