"""What the benchmarks share: the segflow workflow command and nnunetv2's environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def snakemake_command(workdir: Path, *config: str, cores: int = 2, targets=()) -> list[str]:
    """``snakemake`` on segflow's Snakefile in ``workdir``, quiet, with ``key=value`` config overrides."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        *map(str, targets),  # first: -q and --config would take them as their values
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
        "-q",
    ]
    return command + (["--config", *config] if config else [])


def budget_config(args, configuration: str, folds, **train) -> dict:
    """segflow's config for one configuration of ``args.dataset`` trained with the reduced budget of ``args``
    (``--epochs``, ``--iterations``, ``--val-iterations``, ``--device``), seed 0, no test images."""
    budget = {"epochs": args.epochs, "iterations_per_epoch": args.iterations, "val_iterations": args.val_iterations}
    return {
        "dataset": str(args.dataset),
        "configurations": [configuration],
        "folds": list(folds),
        "device": args.device,
        "test_images": None,
        "train": {**budget, "seed": 0, **train},
    }


def add_segflow_only(parser) -> None:
    """The option every comparison takes: run segflow's side alone, without nnunetv2 (its figures are then
    "not run"). tests/test_bench.py runs each benchmark so on a tiny input, so that none rots unnoticed."""
    parser.add_argument(
        "--segflow-only", action="store_true", help="segflow's side alone (no nnunetv2 needed; CI's smoke test)"
    )


def as_nnunet_users_have_it() -> dict:
    """This process's environment without what importing segflow added (its OpenMP wait policy): nnunetv2 runs
    as its users run it."""
    import segflow

    env = dict(os.environ)
    if segflow.WAIT_POLICY_SET_BY_SEGFLOW:
        env.pop("OMP_WAIT_POLICY", None)
    return env


def nnunet_env(base: Path, venv: Path | None = None, **extra: str) -> dict:
    """nnunetv2's folders under ``base``, torch.compile off, ``extra`` variables, its venv first on PATH."""
    env = dict(
        as_nnunet_users_have_it(),
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
    config = (f"dataset={hippocampus}", "folds=[]", "configurations=[3d_fullres]")
    splits = f"results/{Path(hippocampus).name}/splits.json"
    command = snakemake_command(workdir, *config, targets=["preprocessing", splits])
    subprocess.run(command, check=True, capture_output=True)
    return workdir / "results" / Path(hippocampus).name


@contextmanager
def background_load(processes: int):
    """``processes`` busy processes beside whatever runs in the block: a shared workstation or cluster node,
    whose other users keep every core busy. Each spins in pure Python (one core's worth of demand, little
    memory), at the benchmark's own priority, killed when the block ends."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL) for _ in range(processes)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def timed(command, env=None) -> float:
    """Seconds a command takes; its output is kept for the error if it fails."""
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def proportional_set_size(pid: int) -> int:
    """A process's PSS in bytes: its resident pages, each shared one divided among the processes sharing it."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(command, env=None, cwd=None, log=None) -> dict:
    """Run a command; wall time and peak memory sampled every 50 ms: the process tree's summed RSS and summed
    PSS (what a memory cgroup charges: shared pages once), and the largest single process's RSS."""
    import psutil

    started = time.perf_counter()
    out = open(log, "w") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    peak = {"tree": 0, "largest": 0, "pss": 0}
    root = psutil.Process(process.pid)

    def sample():
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                rss = [p.memory_info().rss for p in tree]
            except psutil.Error:
                tree, rss = [], [0]
            peak["tree"] = max(peak["tree"], sum(rss))
            peak["largest"] = max(peak["largest"], max(rss))
            peak["pss"] = max(peak["pss"], sum(proportional_set_size(p.pid) for p in tree))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    returncode = process.wait()
    sampler.join()
    wall = time.perf_counter() - started
    if returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed ({returncode}); see {log}")
    return {
        "wall_s": wall,
        "peak_tree_gb": peak["tree"] / 1e9,
        "peak_pss_gb": peak["pss"] / 1e9,
        "peak_largest_gb": peak["largest"] / 1e9,
    }


def msd_test_images(task: Path, folder: Path, count: int) -> list[str]:
    """The first ``count`` test images of an MSD Task folder as CASE_0000.nii.gz files in ``folder`` (both frameworks
    read that layout); returns the case ids."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    images = sorted(p for p in (Path(task) / "imagesTs").glob("*.nii.gz") if not p.name.startswith("."))
    cases = []
    for image in images[:count]:
        case = image.name[: -len(".nii.gz")]
        shutil.copy(image, folder / f"{case}_0000.nii.gz")
        cases.append(case)
    return cases


def nnunet_budget_trainer(name: str, epochs: int, iterations: int, val_iterations: int, validate: bool) -> str:
    """Source of a module with an nnunetv2 trainer class ``name`` that only sets the budget (and, unless
    ``validate``, skips the final full-case validation); nnunetv2 finds it through ``nnUNet_extTrainer``."""
    source = f"""
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {name}(nnUNetTrainer):
    # nnunetv2 records its trainer's explicit signature (init arguments), so no *args here.
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = {epochs}
        self.num_iterations_per_epoch = {iterations}
        self.num_val_iterations_per_epoch = {val_iterations}
"""
    if not validate:
        source += """
    def perform_actual_validation(self, save_probabilities: bool = False):
        pass
"""
    return source


def nnunet_log_numbers(log_text: str, key: str) -> list[float]:
    """The number after every ``key`` in an nnunetv2 training log, e.g. ``train_loss`` or ``Epoch time:``."""
    return [float(v) for v in re.findall(rf"{re.escape(key)} ([-+]?\d*\.?\d+(?:e[-+]?\d+)?)", log_text)]
