"""Shared fixtures: running the real workflow, and small datasets written to disk for it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segflow.io import save_json, write_image

REPO = Path(__file__).resolve().parents[1]
#: A tiny nnU-Net v2 model folder trained by nnunetv2 2.8.1 (tests/nnunetv2_fixture/make_model_fixture.py).
NNUNET_MODELS = REPO / "tests" / "data" / "nnunetv2_model"
NNUNET_MODEL = NNUNET_MODELS / "Dataset950_Parity" / "nnUNetTrainer_Fixture__nnUNetPlansTiny__3d_fullres"
HIPPOCAMPUS_VARIABLE = "SEGFLOW_HIPPOCAMPUS"
pytest_plugins = ["slurm_cluster"]  # the local SLURM's fixtures


class Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def required(message: str) -> None:
    """Skip a test that needs something this machine lacks, with ``message`` saying how to provide it; under
    CI (SEGFLOW_CI=1), where everything is provided, fail instead."""
    if os.environ.get("SEGFLOW_CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def plain_python() -> str:
    """The Python of an environment made with the Quick start's install alone (no test extras), at the lowest
    numpy and torch that pyproject.toml allows: SEGFLOW_PLAIN_PYTHON, which .ci/run makes."""
    python = os.environ.get("SEGFLOW_PLAIN_PYTHON")
    if not python:
        required(
            "set SEGFLOW_PLAIN_PYTHON to the python of a virtual environment made with "
            "`pip install $(python tests/floors.py) && pip install . $(python tests/floors.py)` (as .ci/run does)"
        )
    return python


def snakemake_command(workdir, *args, config: dict | None = None, launcher=("-m", "snakemake")) -> list[str]:
    """``snakemake --cores 2`` on segflow's Snakefile in ``workdir``; targets belong in ``args``. ``launcher``: what
    python runs, ``-m snakemake`` or a script that starts it."""
    command = [sys.executable, *launcher, "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    command += ["--cores", "2", *args]
    if config:
        command += ["--config", *[f"{k}={v}" for k, v in config.items()]]
    return command


def run_snakemake(
    workdir, *args, config: dict | None = None, check: bool = True, launcher=("-m", "snakemake")
) -> subprocess.CompletedProcess:
    """Run the workflow for real in ``workdir``; returns the completed process (stdout and stderr merged)."""
    command = snakemake_command(workdir, *args, config=config, launcher=launcher)
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-6000:]}")
    return result


SNAKEMAKE_PREAMBLE = ("Using workflow specific profile", "Config file ")


def the_one_line(output: str) -> str:
    """What a run refused before any job printed besides Snakemake's own preamble: exactly one line."""
    lines = [line for line in output.strip().splitlines() if not line.startswith(SNAKEMAKE_PREAMBLE)]
    assert len(lines) == 1 and "Traceback" not in output, output[-3000:]
    return lines[0]


def scheduled_jobs(dry_run_output: str) -> dict[str, int]:
    """Rule name -> count from the job table of a ``snakemake -n`` run."""
    jobs, in_table = {}, False
    for line in dry_run_output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if not parts or parts[0].startswith("-"):
                continue
            if parts[0] == "total":
                break
            jobs[parts[0]] = int(parts[1])
    return jobs


def write_case(
    root: Path, case: str, image: np.ndarray, label: np.ndarray, spacing=(1.0, 1.0, 1.0), layout: str = "raw"
) -> None:
    """One case in an nnU-Net v2 raw folder (C x Z x Y x X image, one file per channel) or an MSD Task
    folder (single-channel 3D file without suffix)."""
    geometry = {"spacing": list(spacing)[::-1], "origin": [0.0, 0.0, 0.0], "direction": list(np.eye(3).ravel())}
    if layout == "raw":
        for c, channel in enumerate(image):
            write_image(channel, geometry, root / "imagesTr" / f"{case}_{c:04d}.nii.gz")
    else:
        write_image(image[0], geometry, root / "imagesTr" / f"{case}.nii.gz")
    write_image(label.astype(np.uint8), geometry, root / "labelsTr" / f"{case}.nii.gz")


def blob_case(seed: int, channels: int = 1, shape=None):
    """A small case: a non-zero body with two nested labelled blobs, as image (C x Z x Y x X) and label."""
    rng = np.random.default_rng(seed)
    shape = shape or tuple(int(s) for s in rng.integers(14, 20, 3))
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centre = [n / 2 for n in shape]
    radius = sum(((g - c) / (n / 2.4)) ** 2 for g, c, n in zip(grid, centre, shape, strict=True))
    label = np.zeros(shape, np.uint8)
    label[radius < 0.5] = 1
    label[radius < 0.15] = 2
    body = radius < 1.0
    image = np.stack([np.where(body, 50 + 40 * label + rng.normal(0, 5, shape), 0) for _ in range(channels)])
    return image.astype(np.float32), label


def write_raw_dataset(root: Path, n_cases: int = 6, channels: int = 1, labels=None) -> list[str]:
    cases = [f"case_{i:03d}" for i in range(n_cases)]
    for i, case in enumerate(cases):
        image, label = blob_case(i, channels)
        write_case(root, case, image, label)
    save_json(
        {
            "channel_names": {str(c): f"MR{c}" for c in range(channels)},
            "labels": labels or {"background": 0, "outer": 1, "inner": 2},
            "numTraining": n_cases,
            "file_ending": ".nii.gz",
        },
        root / "dataset.json",
    )
    return cases


def write_tiny_dataset(root: Path, n_cases: int) -> None:
    """An nnU-Net v2 raw folder of ``n_cases`` 4 x 4 x 4 cases: files for the DAG, no work for the jobs."""
    geometry = {"spacing": [1.0, 1.0, 1.0], "origin": [0.0, 0.0, 0.0], "direction": list(np.eye(3).ravel())}
    image, label = np.ones((4, 4, 4), np.float32), np.zeros((4, 4, 4), np.uint8)
    label[1:3, 1:3, 1:3] = 1
    for i in range(n_cases):
        write_image(image, geometry, root / "imagesTr" / f"case_{i:04d}_0000.nii.gz")
        write_image(label, geometry, root / "labelsTr" / f"case_{i:04d}.nii.gz")
    labels = {"background": 0, "organ": 1}
    save_json(
        {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": n_cases, "file_ending": ".nii.gz"},
        root / "dataset.json",
    )


def write_msd_dataset_json(root: Path, cases) -> None:
    save_json(
        {
            "name": "Blobs",
            "tensorImageSize": "3D",
            "modality": {"0": "MRI"},
            "labels": {"0": "background", "1": "outer", "2": "inner"},
            "numTraining": len(cases),
            "numTest": 0,
            "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
            "test": [],
        },
        root / "dataset.json",
    )


@pytest.fixture(scope="session")
def demo_run(request, tmp_path_factory) -> Path:
    """The default run (the built-in demo) once, locally with ``--cores 2``; returns its working directory.

    It runs in two calls, as a user stopping after a stage would: the stage target ``preprocessing`` first
    (the files it left are listed in ``preprocessing_stage_files.json``), then the rest. What snakemake
    printed on the terminal is kept in ``preprocessing_stage.out`` and ``snakemake.out``.

    Where the session's tests include the demo's SLURM run, that starts first and waits on SLURM beside this
    run and the tests after it (slurm_cluster.py); its test, in the same worker (``worker_group``), reports a
    missing or failed SLURM."""
    if any("slurm_demo_run" in item.fixturenames for item in request.session.items):
        try:
            request.getfixturevalue("slurm_demo_run")
        except (pytest.skip.Exception, pytest.fail.Exception):
            pass
    workdir = tmp_path_factory.mktemp("demo")
    stage = run_snakemake(workdir, "preprocessing")
    (workdir / "preprocessing_stage.out").write_text(stage.stdout)
    results = workdir / "results"
    files = sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file())
    save_json(files, workdir / "preprocessing_stage_files.json")
    (workdir / "snakemake.out").write_text(run_snakemake(workdir).stdout)
    return workdir


@pytest.fixture(scope="session")
def hippocampus() -> Path:
    """The MSD Task04 Hippocampus folder. CI sets SEGFLOW_HIPPOCAMPUS; when it is set the data must be there."""
    value = os.environ.get(HIPPOCAMPUS_VARIABLE)
    if value is None:
        fallback = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
        if (fallback / "dataset.json").is_file():
            return fallback
        pytest.skip(f"set {HIPPOCAMPUS_VARIABLE} to the MSD Task04_Hippocampus folder to run this test")
    path = Path(value)
    if not (path / "dataset.json").is_file():
        pytest.fail(f"{HIPPOCAMPUS_VARIABLE}={value} does not hold the Hippocampus dataset (no dataset.json)")
    return path


@pytest.fixture(scope="session")
def hippocampus_run(hippocampus, tmp_path_factory) -> Path:
    """The workflow run once on all 260 Hippocampus cases up to its preprocessing stage (plans, splits,
    preprocessed 2d + 3d_fullres, and the budget of a run that trains no fold, which times nothing: the demo's
    tests time the planned networks, bench/train_step --budget-probe Hippocampus'). What snakemake printed is
    kept in ``snakemake.out`` beside ``results``."""
    workdir = tmp_path_factory.mktemp("hippocampus")
    config = hippocampus_config(hippocampus)
    run = run_snakemake(workdir, "preprocessing", "results/Task04_Hippocampus/splits.json", config=config)
    (workdir / "snakemake.out").write_text(run.stdout)
    return workdir / "results" / "Task04_Hippocampus"


def hippocampus_config(hippocampus: Path) -> dict:
    return {"dataset": str(hippocampus), "folds": "[]"}


def tiny_run(**settings) -> dict:
    """The config of a run that only tries the chain: fold 0, one training and one validation iteration, no
    mirroring, no test images; ``settings`` add to it or replace its values (as --config spells them)."""
    return {
        "case_batches": 2,
        "folds": "[0]",
        "train": "{epochs: 1, iterations_per_epoch: 1, val_iterations: 1, threads: 1}",
        "inference": "{mirror: false, threads: 1}",
        "test_images": "null",
        **settings,
    }


def load(path):
    with open(path) as f:
        return json.load(f)


def declared_resources(dry_run: str) -> dict[str, dict[str, int]]:
    """Benchmark file -> the mem_mb and runtime (where given) of each job a ``snakemake -n`` lists."""
    declared = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run):
        benchmark = re.search(r"^\s+benchmark: (\S+)", block, re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        if benchmark and resources:
            values = dict(re.findall(r"\b(mem_mb|runtime)=(\d+)", resources[1]))
            declared[benchmark[1]] = {k: int(v) for k, v in values.items()}
    return declared


def measured(benchmark) -> dict[str, float]:
    """A Snakemake benchmark file's first run: peak resident memory (MB) and wall time (s) of the job."""
    header, values = benchmark.read_text().splitlines()[:2]
    row = dict(zip(header.split("\t"), values.split("\t"), strict=True))
    return {"max_rss": float(row["max_rss"]), "s": float(row["s"])}


def assert_every_job_used_less_than_it_declared(workdir, out, config=None) -> set[str]:
    """Snakemake's benchmark files of a finished run (peak resident memory of each heavy job's process tree, and
    its wall time) against what the same jobs declare (mem_mb, runtime where declared), as a dry-run that forces
    them lists it; returns the kinds of job checked."""
    benchmarks = sorted((out / "benchmarks").rglob("*.tsv"))
    rules = {"fingerprint", "train", "validate", "budget"}
    rules |= {f"preprocess_{p.stem}" for p in benchmarks if p.parent.parent.name == "preprocess"}
    rules |= {f"predict_{p.stem}" for p in benchmarks if p.parent.name == "predict"}
    declared = {}
    for forced in (["fingerprint"], sorted(rules - {"fingerprint"})):  # forcing the fingerprint defers the rest
        dry = run_snakemake(workdir, "-n", "--forcerun", *forced, config=config).stdout
        declared |= declared_resources(dry)
    checked = []
    for benchmark in benchmarks:
        relative = str(benchmark.relative_to(workdir))
        assert relative in declared, f"{relative}: no job of the dry-run declares it"
        used, asked = measured(benchmark), declared[relative]
        assert used["max_rss"] < asked["mem_mb"], f"{relative}: used {used['max_rss']:.0f} MB, declared {asked}"
        if "runtime" in asked:
            assert used["s"] < 60 * asked["runtime"], f"{relative}: took {used['s']:.0f} s, declared {asked}"
        checked.append(relative)
    return {path.split("/")[3].removesuffix(".tsv") for path in checked}


# The quick subset (``python -m pytest -m quick``, README): every test but those marked slow (a workflow, a training
# or nnunetv2 run for real, over 4 s on a busy CI machine), those that need a fixture that runs a whole workflow,
# a SLURM or another Python environment, and the modules whose tests all run workflows or benchmarks.
WHOLE_RUN_FIXTURES = {
    "demo_run",
    "demo_results",
    "demo_images",
    "hippocampus",
    "hippocampus_run",
    "slurm",
    "slurm_demo_run",
    "plain_python",
    "floor_python",
}
WORKFLOW_MODULES = {"test_workflow", "test_slurm", "test_faults", "test_bad_inputs", "test_report", "test_bench"}
#: Session fixtures too costly to make once per worker: the tests that use one run in one worker.
SHARED_RUNS = {
    "demo_run": "demo",
    "demo_results": "demo",
    "demo_images": "demo",
    "slurm_demo_run": "demo",  # its test compares with the local demo run
    "hippocampus_run": "hippocampus",
}


def worker_group(item) -> str | None:
    """The xdist group of a test (``--dist loadgroup``): its costly session fixture's, else its module's where
    it uses a fixture made once per module, else none (it goes to whichever worker is free)."""
    for fixture, group in SHARED_RUNS.items():
        if fixture in item.fixturenames:
            return group
    if any(defs[-1].scope == "module" for defs in item._fixtureinfo.name2fixturedefs.values()):
        return item.module.__name__
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        whole_run = WHOLE_RUN_FIXTURES & set(item.fixturenames) or item.module.__name__ in WORKFLOW_MODULES
        if not whole_run and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.quick)
        group = worker_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
