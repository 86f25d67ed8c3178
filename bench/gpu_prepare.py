"""Prepares, on this machine, what the GPU scripts (bench/gpu_*.sh) carry to a lent GPU machine, which reaches
no package index and has torch but none of the imaging packages:

* ``.whl``: wheels for its Python (3.12, x86-64) of nnunetv2 2.8.1 and what it and segflow import that the
  machine's image lacks, at the versions nnunetv2 2.8.1 installs here;
* ``.stubs``: empty ``SimpleITK`` and ``imagecodecs`` modules (nnunetv2 imports them at start-up; training
  never calls them);
* ``.gpudata/hippocampus_preprocessed.tar.xz``: segflow's preprocessed MSD Hippocampus 3d_fullres (plans,
  splits, dataset.json, arrays) for bench/gpu_train_quality.sh.

Each folder is added to ``.git/info/exclude``, so that only ``carry`` takes it along. Device time is short:
run this before asking for the machine, then, for example,
    run(command="bash bench/gpu_checks.sh",
        carry=[".whl", ".stubs", ".gpudata"])

Usage: python bench/gpu_prepare.py [--hippocampus DIR] [--segflow-results DIR] [--skip wheels data]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from benchlib import REPO, hippocampus_default, preprocessed_hippocampus

# What nnunetv2 2.8.1 and segflow's training import that the GPU machine's image does not hold (the image's
# package list: the device tool's KINDS.md), at the versions installed with nnunetv2 2.8.1 here.
WHEELS = [
    "nnunetv2==2.8.1",
    "acvl-utils==0.2.6",
    "batchgenerators==0.25.5",
    "batchgeneratorsv2==0.3.6",
    "blosc2==4.14.1",
    "connected-components-3d==4.1.1",
    "dynamic-network-architectures==0.4.4",
    "graphviz==0.21",
    "monai==1.5.2",
    "ndindex==1.10.1",
    "nibabel==5.4.2",
    "numexpr==2.14.2",
    "yacs==0.1.8",
]
GPU_PYTHON = ["--python-version", "3.12", "--implementation", "cp"]
GPU_PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
STUBS = ["SimpleITK", "imagecodecs"]
DATA = "hippocampus_preprocessed.tar.xz"
# What bench/train_quality.py reads of segflow's results (--segflow-results).
PREPROCESSED = ["plans.json", "splits.json", "raw/dataset.json", "preprocessed/3d_fullres"]


def exclude_from_git(repo: Path, folders) -> None:
    """Adds ``/folder/`` to the repository's .git/info/exclude for each folder not yet there."""
    exclude = repo / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    missing = [f"/{folder}/" for folder in folders if f"/{folder}/" not in lines]
    if missing:
        exclude.write_text("".join(line + "\n" for line in [*lines, *missing]))


def download_wheels(folder: Path) -> None:
    """Binary wheels for the GPU machine's Python; a package published as a source archive alone is built
    into a wheel here (pure Python, so it runs there too)."""
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [arg for platform in GPU_PLATFORMS for arg in ("--platform", platform)]
    pip = [sys.executable, "-m", "pip", "-q"]
    for requirement in WHEELS:
        name = requirement.split("==")[0].replace("-", "_").lower()
        if any(w.name.lower().startswith(f"{name}-") for w in folder.glob("*.whl")):
            continue
        download = [*pip, "download", "--no-deps", "--only-binary=:all:", *GPU_PYTHON, *platforms, "-d", folder]
        if subprocess.run([*download, requirement], capture_output=True).returncode != 0:
            subprocess.run([*pip, "wheel", "--no-deps", "-w", folder, requirement], check=True)


def make_stubs(folder: Path) -> None:
    for module in STUBS:
        (folder / module).mkdir(parents=True, exist_ok=True)
        (folder / module / "__init__.py").write_text("")


def pack_preprocessed(results: Path, archive: Path) -> None:
    """The parts of a segflow results folder that bench/train_quality.py trains from, as a .tar.xz."""
    missing = [part for part in PREPROCESSED if not (results / part).exists()]
    if missing:
        raise SystemExit(f"{results} lacks {', '.join(missing)}: run segflow's preprocessing of 3d_fullres first")
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:xz") as tar:
        for part in PREPROCESSED:
            tar.add(results / part, arcname=part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hippocampus", type=Path, default=hippocampus_default(), help="the MSD Task04 folder")
    parser.add_argument("--segflow-results", type=Path, help="segflow's preprocessed Hippocampus results folder")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout the GPU machine gets")
    parser.add_argument("--skip", nargs="*", default=[], choices=["wheels", "data"])
    args = parser.parse_args()
    exclude_from_git(args.repo, [".whl", ".stubs", ".gpudata"])
    if "wheels" not in args.skip:
        download_wheels(args.repo / ".whl")
    make_stubs(args.repo / ".stubs")
    if "data" not in args.skip:
        with tempfile.TemporaryDirectory() as work:
            results = preprocessed_hippocampus(args.hippocampus, Path(work), args.segflow_results)
            pack_preprocessed(results, args.repo / ".gpudata" / DATA)
    sizes = {f: sum(p.stat().st_size for p in (args.repo / f).rglob("*") if p.is_file()) for f in (".whl", ".gpudata")}
    print("to carry: " + ", ".join(f"{folder} {size / 2**20:.1f} MiB" for folder, size in sizes.items()))
    print("(the working tree and what is carried travel within 64 MiB)")


if __name__ == "__main__":
    main()
