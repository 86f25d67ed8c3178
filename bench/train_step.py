"""Benchmark: seconds per training iteration, segflow vs nnunetv2 2.8.1, same plan, batch, patch and threads.

An iteration is what a training epoch repeats: wait for the next augmented batch (data loading and
augmentation included, in background workers), move it to the device, forward, loss with deep
supervision, backward, gradient clipping and the optimiser step. Reported: the median over
``--iterations`` iterations after ``--warmup`` iterations, and the CPU seconds (user + system) the
data-loading worker processes spent per timed iteration (read from /proc: all descendants of the
benchmark's process, nnunetv2's idle validation workers included). With ``--rounds N`` each framework runs
N times, taking turns, and the ratio is the median of the N rounds' ratios: on a shared machine, whose speed
drifts by more than the two frameworks differ, runs minutes apart compare better than runs far apart.

Plans, from segflow's planner (equal to nnunetv2's for these fingerprints):
* ``hippocampus``: MSD Hippocampus 3d_fullres, 1 channel, patch 40 x 56 x 40, batch 9, 4 stages;
* ``brats``: a BraTS-like 4-channel plan, patch 128 x 128 x 128, batch 2, 6 stages, masked z-score.
Both frameworks train on the same synthetic preprocessed cases (segflow's .npy, nnunetv2's .b2nd), so no
dataset is needed. torch.compile stays off for both (nnunetv2: nnUNet_compile=False).

Usage (CPU here):  python bench/train_step.py --nnunet-python /opt/nnunet-venv/bin/python --workers 1 --rounds 4
On a GPU machine:  python bench/train_step.py --device cuda --nnunet-python python3 --workers 12 --threads 13
segflow alone:     python bench/train_step.py --segflow-only --plans hippocampus --iterations 2 --warmup 1
A busy machine:    python bench/train_step.py --plans hippocampus --load 4 ...  (4 busy processes beside both)
MONAI's networks:  python bench/train_step.py --network segresnet --plans hippocampus --batch-size 2
(segflow alone: nnunetv2 2.8.1 ships no trainer for them)
The budget's probe: python bench/train_step.py --segflow-only --budget-probe ...  (also times the step as
``segflow.budget.probe`` estimates it before a run, synthetic batches of the same plan, and says how far that
is from the step measured with real loading)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import (  # noqa: E402
    add_segflow_only,
    as_nnunet_users_have_it,
    background_load,
    nnunet_env,
    save_nnunet_case,
)

from segflow.networks import NETWORKS  # noqa: E402
from segflow.plan import PLANNERS, plan_experiment  # noqa: E402
from segflow.preprocess import class_locations  # noqa: E402

PLANS = {
    "hippocampus": {
        "channels": 1,
        "labels": 3,
        "cases": 260,
        "shape": [36, 50, 35],
        "relative_size": 1.0,
        "channel_names": {"0": "MRI"},
    },
    "brats": {
        "channels": 4,
        "labels": 4,
        "cases": 40,
        "shape": [138, 169, 138],
        "relative_size": 0.5,
        "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
    },
}


def make_plans(name: str, planner: str = "default", batch_size: int | None = None) -> tuple[dict, dict]:
    spec = PLANS[name]
    fingerprint = {
        "spacings": [[1.0, 1.0, 1.0]] * spec["cases"],
        "shapes_after_crop": [spec["shape"]] * spec["cases"],
        "median_relative_size_after_cropping": spec["relative_size"],
        "foreground_intensity_properties_per_channel": {
            str(c): {
                "max": 5.0,
                "mean": 0.0,
                "median": 0.0,
                "min": -5.0,
                "percentile_00_5": -3.0,
                "percentile_99_5": 3.0,
                "std": 1.0,
            }
            for c in range(spec["channels"])
        },
    }
    labels = {"background": 0, **{f"label{i}": i for i in range(1, spec["labels"])}}
    dataset_json = {
        "channel_names": spec["channel_names"],
        "labels": labels,
        "numTraining": spec["cases"],
        "file_ending": ".nii.gz",
        "name": f"Bench{name}",
    }
    dataset_name = f"Dataset99{list(PLANS).index(name)}_Bench{name}"
    plans = plan_experiment(fingerprint, dataset_json, None, dataset_name, planner)
    if batch_size is not None:
        plans["configurations"]["3d_fullres"]["batch_size"] = batch_size
    return plans, dataset_json


def synthetic_case(seed: int, channels: int, labels: int, shape):
    """A case at the plan's median shape: nested blobs as labels, -1 outside an ellipsoidal body."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    centre = rng.uniform(-0.2, 0.2, 3)
    r2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    seg = np.zeros((1, *shape), np.int8)
    for label in range(1, labels):
        seg[0][r2 < 0.4 / label] = label
    seg[0][sum(g**2 for g in grid) > 1.2] = -1
    data = (seg.astype(np.float32) + rng.normal(0, 1, (channels, *shape))).astype(np.float32)
    data[:, seg[0] < 0] = 0
    return data, seg


def cases_for(plans: dict, dataset_json: dict, n_cases: int):
    configuration = plans["configurations"]["3d_fullres"]
    shape = [int(round(s)) for s in configuration["median_image_size_in_voxels"]]
    channels, labels = len(dataset_json["channel_names"]), len(dataset_json["labels"])
    for i in range(n_cases):
        data, seg = synthetic_case(i, channels, labels, shape)
        yield f"case_{i:03d}", data, seg, class_locations(seg, list(range(1, labels)))


def splits_for(n_cases: int) -> list[dict]:
    ids = [f"case_{i:03d}" for i in range(n_cases)]
    return [{"train": ids, "val": ids[:2]}]


def descendant_cpu_seconds() -> float:
    """User + system CPU seconds spent so far by this process's live descendants: the data-loading worker
    processes (read from /proc, so that it works in nnunetv2's environment too, which has no psutil)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent_of, seconds = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid = int(entry.name)
        parent_of[pid] = int(fields[1])
        seconds[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    descendants, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parent_of.items() if parent in frontier} - descendants
        descendants |= frontier
    return sum(seconds[pid] for pid in descendants)


def timed_iterations(step, warmup: int, iterations: int, synchronize) -> tuple[list[float], float]:
    """Seconds of each timed iteration, and the CPU seconds the data-loading processes spent per timed
    iteration (their prefetching included, so in steady state it is the cost of one batch)."""
    times, loader_cpu = [], 0.0
    for i in range(warmup + iterations):
        if i == warmup:
            loader_cpu = descendant_cpu_seconds()
        started = time.perf_counter()
        step()
        synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return times, (descendant_cpu_seconds() - loader_cpu) / iterations


def peak_gpu_memory_gb() -> float | None:
    """The most GPU memory torch held for tensors in this process, or None on a CPU."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def timed_calls(owner, method: str) -> list[float]:
    """Wraps ``owner.method`` to record the wall seconds of each call (on CUDA, up to the end of its kernels)."""
    import torch

    original, seconds = getattr(owner, method), []

    def timed(*args, **kwargs):
        started = time.perf_counter()
        result = original(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.current_stream().synchronize()
        seconds.append(time.perf_counter() - started)
        return result

    setattr(owner, method, timed)
    return seconds


def worker_segflow(args, work: Path) -> dict:
    import torch

    from segflow.io import save_json, save_npy
    from segflow.networks import with_network
    from segflow.train.loop import Trainer
    from segflow.train.settings import TrainSettings

    torch.set_num_threads(args.threads)
    plans, dataset_json = make_plans(args.plan, args.planner, args.batch_size)
    plans = with_network(plans, args.network)
    folder = work / "segflow" / "preprocessed" / "3d_fullres"
    for case, data, seg, locations in cases_for(plans, dataset_json, args.cases):
        save_npy(data, folder / f"{case}.npy")
        save_npy(seg, folder / f"{case}_seg.npy")
        save_json({"class_locations": locations}, folder / f"{case}.json")
    trainer = Trainer(
        plans,
        dataset_json,
        "3d_fullres",
        folder.parent,
        splits_for(args.cases),
        0,
        work / "segflow" / "out",
        TrainSettings(
            epochs=1,
            augment_on=args.augment_on,
            channels_last={"auto": None, "on": True, "off": False}[args.channels_last],
        ),
        args.device,
        args.workers,
    )
    augmenting = timed_calls(trainer.augmentation.batched, "apply")
    trainer.network.train()
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    with trainer.batch_stream(validation=False) as batches:
        times, loader_cpu = timed_iterations(
            lambda: trainer.train_step(*next(batches)), args.warmup, args.iterations, sync
        )
    configuration = trainer.configuration.settings
    estimate = None
    if args.budget_probe:
        from segflow.budget import probe

        estimate = probe(plans, dataset_json, "3d_fullres", trainer.settings, args.device)
    return {
        "budget_probe": estimate,
        "times": times,
        "loader_cpu_s_per_batch": loader_cpu,
        "augment_on": args.augment_on,
        "device_augmentation_s_per_batch": statistics.median(augmenting) if augmenting else None,
        "patch": configuration["patch_size"],
        "batch": configuration["batch_size"],
        "network": configuration["architecture"]["network_class_name"].rsplit(".", 1)[-1],
        "parameters_m": sum(p.numel() for p in trainer.network.parameters()) / 1e6,
        "device": torch.cuda.get_device_name() if trainer.device.type == "cuda" else "cpu",
        "peak_gpu_memory_gb": peak_gpu_memory_gb(),
        "torch": torch.__version__,
    }


def worker_nnunet(args, work: Path) -> dict:
    base = work / "nnunetv2"
    os.environ.update(nnunet_env(base, nnUNet_n_proc_DA=str(args.workers)))
    import torch
    from batchgenerators.utilities.file_and_folder_operations import save_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    torch.set_num_threads(args.threads)
    plans, dataset_json = make_plans(args.plan, args.planner, args.batch_size)
    folder_base = base / "preprocessed" / plans["dataset_name"]
    folder = folder_base / plans["configurations"]["3d_fullres"]["data_identifier"]
    folder.mkdir(parents=True, exist_ok=True)
    patch = plans["configurations"]["3d_fullres"]["patch_size"]  # storage as nnunetv2 preprocesses it
    for case, data, seg, locations in cases_for(plans, dataset_json, args.cases):
        save_nnunet_case(folder, case, data, seg, locations, patch)
    save_json(splits_for(args.cases), str(folder_base / "splits_final.json"))
    save_json({"spacings": [], "shapes_after_crop": []}, str(folder_base / "dataset_fingerprint.json"))
    plans["continue_training"] = False  # nnunetv2 2.8.1's run_training sets this before building a trainer
    trainer = nnUNetTrainer(plans, "3d_fullres", 0, dataset_json, device=torch.device(args.device))
    trainer.on_train_start()
    trainer.network.train()
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    try:
        times, loader_cpu = timed_iterations(
            lambda: trainer.train_step(next(trainer.dataloader_train)), args.warmup, args.iterations, sync
        )
    finally:
        for loader in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(loader, "_finish"):
                loader._finish()
    return {
        "times": times,
        "loader_cpu_s_per_batch": loader_cpu,
        "patch": list(trainer.configuration_manager.patch_size),
        "batch": trainer.configuration_manager.batch_size,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "peak_gpu_memory_gb": peak_gpu_memory_gb(),
        "torch": torch.__version__,
    }


def run_worker(python: str, framework: str, args, work: Path) -> dict:
    command = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        framework,
        "--plan",
        args.plan,
        "--device",
        args.device,
        "--iterations",
        str(args.iterations),
        "--warmup",
        str(args.warmup),
        "--cases",
        str(args.cases),
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        "--augment-on",
        args.augment_on,
        "--planner",
        args.planner,
        "--network",
        args.network,
        "--channels-last",
        args.channels_last,
        *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
        *(["--budget-probe"] if args.budget_probe and framework == "segflow" else []),
        "--work",
        str(work),
    ]
    env = as_nnunet_users_have_it() if framework == "nnunetv2" else None
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{framework} worker failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def pooled(rounds: list[dict]) -> dict:
    """One framework's figures over all rounds: every timed iteration, the mean loading cost per batch."""
    merged = dict(rounds[0])
    merged["times"] = [t for figures in rounds for t in figures["times"]]
    merged["loader_cpu_s_per_batch"] = statistics.mean(f["loader_cpu_s_per_batch"] for f in rounds)
    if "device_augmentation_s_per_batch" in merged:  # segflow's alone
        measured = [s for f in rounds if (s := f["device_augmentation_s_per_batch"]) is not None]
        merged["device_augmentation_s_per_batch"] = statistics.median(measured) if measured else None
    return merged


def timed_rounds(args, work: Path) -> tuple[dict, dict | None, list[dict]]:
    """segflow's and nnunetv2's figures over ``--rounds`` rounds, the two frameworks taking turns first
    (ABBA: a machine that gets slower or faster during the run penalises neither), and each round's ratio
    of medians, which compares runs minutes apart instead of a whole benchmark apart."""
    frameworks = ["segflow"] if args.segflow_only else ["nnunetv2", "segflow"]
    python = {"segflow": sys.executable, "nnunetv2": args.nnunet_python}
    runs: dict[str, list[dict]] = {f: [] for f in frameworks}
    for r in range(args.rounds):
        for framework in frameworks if r % 2 == 0 else frameworks[::-1]:
            runs[framework].append(run_worker(python[framework], framework, args, work))
    rounds = []
    for r in range(args.rounds):
        medians = {f: statistics.median(runs[f][r]["times"]) for f in frameworks}
        if not args.segflow_only:
            medians["ratio"] = medians["segflow"] / medians["nnunetv2"]
        rounds.append(medians)
    nn = None if args.segflow_only else pooled(runs["nnunetv2"])
    return pooled(runs["segflow"]), nn, rounds


def compare_plan(args, name: str) -> dict:
    """Times both frameworks on one plan, prints the figures and returns them."""
    args.plan = name
    with background_load(args.load):
        sf, nn, rounds = timed_rounds(args, args.work)
    sf_median = statistics.median(sf["times"])
    result = {"segflow": sf, "rounds": rounds}
    if nn is not None:
        nn_median = statistics.median(nn["times"])
        result.update({"nnunetv2": nn, "ratio": statistics.median(r["ratio"] for r in rounds)})
    if args.compare_layouts:
        chosen = args.channels_last
        args.channels_last = "off" if chosen in ("auto", "on") and args.device == "cuda" else "on"
        other = run_worker(sys.executable, "segflow", args, args.work)
        result[f"segflow_channels_last_{args.channels_last}"] = other
        print(f"   segflow with channels_last={args.channels_last}: {statistics.median(other['times']):.3f} s/it")
        args.channels_last = chosen
    print(
        f"== {name} ({args.planner} planner, {sf['network']} {sf['parameters_m']:.1f} M parameters): "
        f"patch {sf['patch']} batch {sf['batch']} on {sf['device']} "
        f"({args.threads} threads, {args.workers} augmentation workers; torch {sf['torch']})"
        + (f", {args.load} busy processes beside it" if args.load else "")
    )
    if nn is not None:
        print(
            f"   nnunetv2 2.8.1: {nn_median:8.3f} s/iteration (median of {len(nn['times'])}; "
            f"patch {nn['patch']} batch {nn['batch']}); data loading {nn['loader_cpu_s_per_batch']:.3f} CPU s "
            "per batch"
        )
    print(
        f"   segflow:        {sf_median:8.3f} s/iteration (median of {len(sf['times'])}); data loading "
        f"{sf['loader_cpu_s_per_batch']:.3f} CPU s per batch; augmentation on the {args.augment_on}"
        + (
            f" ({sf['device_augmentation_s_per_batch']:.3f} s per batch in the training process"
            + (", overlapping the step)" if args.device == "cuda" else ")")
            if sf["device_augmentation_s_per_batch"] is not None
            else ""
        )
    )
    if sf.get("budget_probe") is not None:
        probed = sf["budget_probe"]
        estimate = probed["train_step_s"] + probed["augmentation_s"]
        result["budget_probe_ratio"] = estimate / sf_median
        print(
            f"   budget probe (segflow.budget, before a run): {estimate:.3f} s per training step on {probed['device']} "
            f"({result['budget_probe_ratio']:.2f} x the step measured above)"
        )
    for framework, figures in (("nnunetv2", nn), ("segflow", sf)):
        if figures is not None and figures.get("peak_gpu_memory_gb") is not None:
            print(f"   {framework} peak GPU memory: {figures['peak_gpu_memory_gb']:.2f} GiB")
    if nn is not None:
        if args.rounds > 1:
            for r, medians in enumerate(rounds, 1):
                print(
                    f"   round {r}: nnunetv2 {medians['nnunetv2']:.3f} s, segflow {medians['segflow']:.3f} s, "
                    f"ratio {medians['ratio']:.2f}"
                )
        print(f"   ratio segflow / nnunetv2 (median of the rounds' ratios): {result['ratio']:.2f}", flush=True)
        loading = sf["loader_cpu_s_per_batch"] / nn["loader_cpu_s_per_batch"]
        print(f"   data-loading CPU ratio segflow / nnunetv2: {loading:.2f}", flush=True)
        result["loader_cpu_ratio"] = loading
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", nargs="+", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="timed runs of each framework, taking turns (a shared machine's speed drifts between runs)",
    )
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2, help="augmentation worker processes, both frameworks")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads, both frameworks")
    parser.add_argument("--nnunet-python", default=os.environ.get("NNUNET_PYTHON", "/opt/nnunet-venv/bin/python"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/segflow-bench-train-step"))
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--channels-last",
        default="auto",
        choices=["auto", "on", "off"],
        help="segflow's memory format (auto: channels-last 3D on CUDA)",
    )
    parser.add_argument(
        "--augment-on",
        default="device",
        choices=["device", "workers"],
        help="segflow: augment whole batches on the training device (default) or samples in the workers",
    )
    parser.add_argument("--planner", default="default", choices=list(PLANNERS), help="whose plan: nnU-Net's planners")
    parser.add_argument(
        "--network", default="default", choices=list(NETWORKS), help="segflow's network axis (MONAI's: segflow alone)"
    )
    parser.add_argument("--batch-size", type=int, help="override the plan's batch size, both frameworks")
    parser.add_argument(
        "--load", type=int, default=0, help="busy processes beside both frameworks (a shared machine), default none"
    )
    parser.add_argument("--compare-layouts", action="store_true", help="also time segflow with the other layout")
    parser.add_argument(
        "--budget-probe", action="store_true", help="segflow: also the budget's estimate of a step (segflow.budget)"
    )
    parser.add_argument("--worker", choices=["segflow", "nnunetv2"], help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    add_segflow_only(parser)
    args = parser.parse_args()
    args.segflow_only = args.segflow_only or args.network != "default"
    if args.worker:
        work = args.work / args.plan
        shutil.rmtree(work / args.worker, ignore_errors=True)  # blosc2 will not overwrite a stored case
        result = worker_segflow(args, work) if args.worker == "segflow" else worker_nnunet(args, work)
        print(json.dumps(result))
        return
    results = {name: compare_plan(args, name) for name in args.plans}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
