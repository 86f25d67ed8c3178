"""Benchmark: segflow's convert -> verify -> crop -> fingerprint -> plan -> preprocess (2d + 3d_fullres) with
``snakemake --cores 2`` against ``nnUNetv2_plan_and_preprocess -np 2 -npfp 2`` (nnunetv2 2.8.1 in its own
virtual environment), on the same data in the same run:

(a) MSD Task04 Hippocampus, 260 small cases: per-job start-up dominates;
(b) a generated set of large anisotropic 2-channel volumes (about 320 x 320 x 60 at 0.6 x 0.6 x 3 mm): the
    work itself dominates.

Prints wall time and peak memory of both, their ratios, and whether the plans, the fingerprint and the
preprocessed arrays agree. Peak memory is sampled every 50 ms over the whole process tree: "tree" is the
largest sum over all processes at one moment, "largest process" the largest single process.

Usage: python bench/preprocess.py [--nnunet-venv /opt/nnunet-venv] [--hippocampus PATH] [--work DIR]
       python bench/preprocess.py --segflow-only --hippocampus TASK --large-cases 2 --large-size anisotropic
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

from benchlib import add_segflow_only, hippocampus_default, measure, nnunet_env, snakemake_command

from segflow.demo import SIZES, generate_raw

COMPARE = r"""
import glob, json, os, pickle, sys
import blosc2, numpy as np
ours, theirs = sys.argv[1], sys.argv[2]
fo = json.load(open(f"{ours}/fingerprint.json")); ft = json.load(open(f"{theirs}/dataset_fingerprint.json"))
report = {"fingerprint_shapes_equal": fo["shapes_after_crop"] == ft["shapes_after_crop"],
          "fingerprint_spacings_equal": bool(np.allclose(fo["spacings"], ft["spacings"]))}
worst = 0.0
for c, b in ft["foreground_intensity_properties_per_channel"].items():
    a = fo["foreground_intensity_properties_per_channel"][c]
    worst = max(worst, max(abs(a[k] - b[k]) / max(1.0, abs(b[k])) for k in b))
report["intensity_max_relative_difference"] = worst
po = json.load(open(f"{ours}/plans.json")); pt = json.load(open(f"{theirs}/nnUNetPlans.json"))
report["plans_configurations_identical"] = all(
    json.dumps(po["configurations"].get(k), sort_keys=True) == json.dumps(v, sort_keys=True)
    for k, v in pt["configurations"].items()) and set(po["configurations"]) == set(pt["configurations"])
for cfg in ("2d", "3d_fullres"):
    max_diff, seg_diff, loc_diff, n = 0.0, 0, 0, 0
    for f in sorted(glob.glob(f"{theirs}/nnUNetPlans_{cfg}/*.pkl")):
        case = os.path.basename(f)[:-4]
        d = blosc2.open(f[:-4] + ".b2nd")[:]; s = blosc2.open(f[:-4] + "_seg.b2nd")[:]
        props = pickle.load(open(f, "rb"))
        od = np.load(f"{ours}/preprocessed/{cfg}/{case}.npy")
        os_ = np.load(f"{ours}/preprocessed/{cfg}/{case}_seg.npy")
        oj = json.load(open(f"{ours}/preprocessed/{cfg}/{case}.json"))
        if od.shape != d.shape:
            max_diff = float("inf"); n += 1; continue
        max_diff = max(max_diff, float(np.abs(od - d).max())); seg_diff += int((os_ != s).sum())
        for k, v in props["class_locations"].items():
            ours_locs = np.array(oj["class_locations"][str(k)]).reshape(-1, 3)
            loc_diff += not np.array_equal(ours_locs, np.asarray(v).reshape(-1, 4)[:, 1:])
        n += 1
    report[cfg] = {"cases": n, "max_abs_data_difference": max_diff, "seg_voxels_differing": seg_diff,
                   "class_location_lists_differing": loc_diff}
print(json.dumps(report))
"""


def run_segflow(dataset: Path, work: Path) -> dict:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    command = snakemake_command(work, f"dataset={dataset}", "folds=[]", targets=["preprocessing"])
    return measure(command, log=work.parent / f"{work.name}.log")


def run_nnunet(venv: Path, base: Path, dataset_id: int, name: str) -> dict:
    shutil.rmtree(base / "preprocessed" / name, ignore_errors=True)
    command = [
        str(venv / "bin" / "nnUNetv2_plan_and_preprocess"),
        "-d",
        str(dataset_id),
        "-np",
        "2",
        "-npfp",
        "2",
        "-c",
        "2d",
        "3d_fullres",
    ]
    return measure(command, env=nnunet_env(base, venv), log=base / f"plan_and_preprocess_{dataset_id}.log")


def compare(venv: Path, ours: Path, theirs: Path) -> dict:
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", COMPARE, str(ours), str(theirs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def report(title: str, nn: dict | None, sf: dict, target: float, parity: dict | None, extra: str = "") -> dict:
    print(f"\n== {title}")
    if nn is not None:
        print(
            f"   nnunetv2 2.8.1 plan_and_preprocess: {nn['wall_s']:7.1f} s   peak RSS tree "
            f"{nn['peak_tree_gb']:.2f} GB, largest process {nn['peak_largest_gb']:.2f} GB{extra}"
        )
    print(
        f"   segflow (snakemake --cores 2):      {sf['wall_s']:7.1f} s   peak RSS tree {sf['peak_tree_gb']:.2f} GB, "
        f"largest process {sf['peak_largest_gb']:.2f} GB"
    )
    if nn is None:
        return {"segflow": sf}
    ratio = sf["wall_s"] / nn["wall_s"]
    print(
        f"   time ratio segflow / nnunetv2: {ratio:.2f} (target <= {target})   "
        f"peak RSS ratio (tree): {sf['peak_tree_gb'] / nn['peak_tree_gb']:.2f} (target <= 1)"
    )
    print(f"   parity: {json.dumps(parity)}")
    return {"nnunetv2": nn, "segflow": sf, "time_ratio": ratio, "parity": parity}


def segflow_against(args, dataset: Path, work: Path, nn: dict | None, theirs: Path, title, target, extra=""):
    """segflow's preprocessing of ``dataset`` in ``work``, checked against nnunetv2's preprocessed folder
    ``theirs`` when nnunetv2 ran (``nn``), and reported."""
    sf = run_segflow(dataset, work)
    parity = None if nn is None else compare(args.nnunet_venv, work / "results" / dataset.name, theirs)
    return report(title, nn, sf, target, parity, extra=extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nnunet-venv", type=Path, default=Path(os.environ.get("NNUNET_VENV", "/opt/nnunet-venv")))
    parser.add_argument("--hippocampus", type=Path, default=hippocampus_default())
    parser.add_argument("--work", type=Path, default=Path("/tmp/segflow-bench-preprocess"))
    parser.add_argument("--large-cases", type=int, default=20)
    parser.add_argument("--large-size", default="large", choices=list(SIZES), help="size of the generated volumes")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    add_segflow_only(parser)
    args = parser.parse_args()
    if not args.segflow_only and not (args.nnunet_venv / "bin" / "nnUNetv2_plan_and_preprocess").exists():
        raise SystemExit(f"no nnunetv2 in {args.nnunet_venv}; install it (../shared/reference/anchor-nnunetv2.md)")
    work = args.work.resolve()
    base = work / "nnunet"
    (base / "raw").mkdir(parents=True, exist_ok=True)
    results = {}

    # (a) Hippocampus. nnunetv2 needs its own MSD conversion first (timed separately, not in the ratio).
    nn, extra = None, ""
    if not args.segflow_only:
        hippo_raw = base / "raw" / "Dataset004_Hippocampus"
        shutil.rmtree(hippo_raw, ignore_errors=True)
        conversion = measure(
            [str(args.nnunet_venv / "bin" / "nnUNetv2_convert_MSD_dataset"), "-i", str(args.hippocampus), "-np", "2"],
            env=nnunet_env(base, args.nnunet_venv),
            log=base / "convert_msd.log",
        )
        extra = f"  (+ {conversion['wall_s']:.1f} s for nnUNetv2_convert_MSD_dataset)"
        nn = run_nnunet(args.nnunet_venv, base, 4, "Dataset004_Hippocampus")
    title = f"(a) MSD {args.hippocampus.name} (segflow includes its MSD conversion)"
    results["hippocampus"] = segflow_against(
        args,
        args.hippocampus,
        work / "segflow_hippocampus",
        nn,
        base / "preprocessed" / "Dataset004_Hippocampus",
        title,
        1.0,
        extra,
    )

    # (b) Large anisotropic 2-channel volumes, as an nnU-Net v2 raw folder both read in place.
    large = work / "data" / f"Dataset901_Segflow_{args.large_size}_{args.large_cases}"
    if not (large / "dataset.json").is_file():
        print(f"generating {args.large_cases} {args.large_size} volumes in {large} ...", flush=True)
        generate_raw(large, args.large_cases, channels=2, size=args.large_size)
    nn, link = None, base / "raw" / "Dataset901_SegflowLarge"
    if not args.segflow_only:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(large)
        nn = run_nnunet(args.nnunet_venv, base, 901, link.name)
    title = f"(b) {args.large_cases} {args.large_size} anisotropic 2-channel volumes"
    results["large"] = segflow_against(
        args, large, work / "segflow_large", nn, base / "preprocessed" / link.name, title, 0.7
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
