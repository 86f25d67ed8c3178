"""Benchmark: where a prediction's time goes, segflow against nnunetv2 2.8.1, stage by stage, in one run.

The cases are bench/memory.py's (a BraTS-size MRI case of 4 x 155 x 240 x 240, a 512 x 512 x 1 000 CT that
export resamples from 0.8 mm back to 0.75 mm in-plane), each predicted from its raw files to a written label
map with a freshly initialised fold 0 (the U-Net's features divided by 8, or ``--feature-divisor``, so that a
CPU run takes minutes; the arrays around the network do not depend on its width; ``--step-size 1`` cuts the
tiles 8-fold), without test-time mirroring (``--mirror``: with it, as both frameworks' users predict), on the
CPU with 2 threads.

Per framework, three kinds of run, each its own process tree, timed and its peak PSS sampled as bench/memory.py
does:

* the stage run: the framework's prediction in one process (segflow: ``segflow predict``; nnunetv2:
  ``nnUNetPredictor.predict_from_files_sequential``, its own loop without worker processes) with the functions
  of each stage wrapped by a clock (bench/stage_clock.py; a stage's time excludes the stages it calls):
  reading, preprocessing, sliding window (its own work: padding, tiles, Gaussian weighting), network (the
  forward passes on each tile), resampling (logits back to the cropped image's grid), argmax, crop back,
  writing; "other" is what the process did besides (start-up, imports, loading the model);
* the command users run: ``segflow predict --threads 2``; ``nnUNetv2_predict_from_modelfolder -npp 1 -nps 1``
  (its fewest workers) and with its defaults (-npp 3 -nps 3), whose worker processes overlap cases (here one);
* nnunetv2's stage run again with its tile accumulators in float32 instead of float16, as segflow's are: the
  label maps are compared with segflow's both ways (a freshly initialised network's class logits lie close
  together, within float16's rounding on some voxels).

"Besides the network" is the stage run's time less its forward passes: what issue 35 asks to bring below half
of nnunetv2's.

Usage: python bench/prediction_stages.py [--cases brats ct] [--work DIR] [--json FILE] [--markdown]
       python bench/prediction_stages.py --segflow-only --scale 0.1   (segflow alone, a tenth of each size: CI)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from benchlib import REPO, add_segflow_only, measure, nnunet_env
from memory import CASES, CONFIGURATION, write_model, write_plans, write_raw

BENCH = Path(__file__).resolve().parent
STAGES = (
    "reading",
    "preprocessing",
    "sliding window",
    "network",
    "resampling",
    "argmax",
    "crop back",
    "writing",
    "other",
)
THREADS = 2

SEGFLOW_STAGES = """
import sys
from stage_clock import StageClock
clock = StageClock()
import segflow.export, segflow.infer, segflow.predict
from segflow.cli import main
clock.wrap(segflow.predict, "read_case", "reading")
clock.wrap(segflow.predict, "preprocess_arrays", "preprocessing")
clock.wrap(segflow.infer.Predictor, "predict", "sliding window")
clock.wrap(segflow.infer.Predictor, "tile_logits", "network")
clock.wrap(segflow.export, "export_on_device", "resampling")  # less its argmax: the resampled bands
clock.wrap(segflow.export, "labels_of_band", "argmax")
clock.wrap(segflow.export, "revert_preprocessing", "crop back")
clock.wrap(segflow.predict, "write_segmentation", "writing")
clock_file, sys.argv = sys.argv[1], ["segflow", *sys.argv[2:]]
main()
clock.save(clock_file)
"""

NNUNET_STAGES = """
import os
import sys
from stage_clock import StageClock
clock = StageClock()
import torch
import nnunetv2.inference.export_prediction as export
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
clock.wrap(SimpleITKIO, "read_images", "reading")
clock.wrap(DefaultPreprocessor, "run_case_npy", "preprocessing")
clock.wrap(nnUNetPredictor, "predict_logits_from_preprocessed_data", "sliding window")
clock.wrap(nnUNetPredictor, "_internal_maybe_mirror_and_predict", "network")
clock.wrap_property(ConfigurationManager, "resampling_fn_probabilities", "resampling")
clock.wrap(LabelManager, "convert_logits_to_segmentation", "argmax")
clock.wrap(export, "insert_crop_into_image", "crop back")
clock.wrap(SimpleITKIO, "write_seg", "writing")
clock_file, model, images, output, threads, step, *options = sys.argv[1:]
if "float32" in options:
    torch.half = torch.float32  # its tile accumulators (dtype=torch.half) in float32, as segflow's
os.makedirs(output, exist_ok=True)  # as its CLI does; its sequential loop does not
torch.set_num_threads(int(threads))
predictor = nnUNetPredictor(  # as its CLI makes it (test-time mirroring only where asked)
    tile_step_size=float(step), use_mirroring="mirror" in options, device=torch.device("cpu"), allow_tqdm=False
)
predictor.initialize_from_trained_model_folder(model, (0,), "checkpoint_final.pth")
predictor.predict_from_files_sequential(images, output)
clock.save(clock_file)
"""


def commands(args, work: Path) -> dict[str, tuple[str, list[str]]]:
    """Each measured run: (framework, command)."""
    model = work / "model" / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}"
    images, out = work / "raw" / "imagesTs", work / "predicted"
    nnunet_bin = args.nnunet_venv / "bin"
    segflow_args = ["predict", "-i", images, "-m", model, "-f", "0", "--device", "cpu", "--threads", THREADS]
    segflow_args += ["--no-postprocessing", "--step-size", args.step_size]
    nnunet_cli = [nnunet_bin / "nnUNetv2_predict_from_modelfolder", "-i", images, "-m", model, "-f", "0"]
    nnunet_cli += ["-device", "cpu", "--disable_progress_bar", "-step_size", args.step_size]
    nnunet_options = ["mirror"] if args.mirror else []
    if not args.mirror:
        segflow_args.append("--disable-tta")
        nnunet_cli.append("--disable_tta")
    runs = {
        "segflow stages": ("segflow", [sys.executable, "-c", SEGFLOW_STAGES, work / "segflow_stages.json"]),
        "segflow predict": ("segflow", [sys.executable, "-m", "segflow.cli"]),
        "nnunetv2 stages": ("nnunetv2", [nnunet_bin / "python", "-c", NNUNET_STAGES, work / "nnunetv2_stages.json"]),
        "nnunetv2 -npp 1 -nps 1": ("nnunetv2", [*nnunet_cli, "-npp", "1", "-nps", "1"]),
        "nnunetv2 defaults": ("nnunetv2", nnunet_cli),
        "nnunetv2 float32": ("nnunetv2", [nnunet_bin / "python", "-c", NNUNET_STAGES, work / "float32_clock.json"]),
    }
    runs["segflow stages"][1].extend([*segflow_args, "-o", out / "segflow_stages"])
    runs["segflow predict"][1].extend([*segflow_args, "-o", out / "segflow_predict"])
    runs["nnunetv2 stages"][1].extend(
        [model, images, out / "nnunetv2_stages", THREADS, args.step_size, *nnunet_options]
    )
    runs["nnunetv2 -npp 1 -nps 1"][1].extend(["-o", out / "nnunetv2_npp1"])
    runs["nnunetv2 defaults"][1].extend(["-o", out / "nnunetv2_defaults"])
    float32 = [model, images, out / "nnunetv2_float32", THREADS, args.step_size, "float32", *nnunet_options]
    runs["nnunetv2 float32"][1].extend(float32)
    wanted = ("segflow",) if args.segflow_only else ("segflow", "nnunetv2")
    return {name: (fw, [str(c) for c in command]) for name, (fw, command) in runs.items() if fw in wanted}


def run_case(args, kind: str) -> dict:
    """Write the case and its model, then every run of ``commands``: wall time, peak memory, stage seconds."""
    work = args.work / kind
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_raw(kind, args.scale, work / "raw")
    plans = write_plans(kind, work / "raw", work, args.feature_divisor)
    write_model(plans, work / "raw", work / "model" / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}")
    path = f"{BENCH}:{REPO}"
    environments = {
        "segflow": dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS=str(THREADS)),
        "nnunetv2": nnunet_env(work / "nnunet_folders", args.nnunet_venv, PYTHONPATH=str(BENCH)),
    }
    environments["nnunetv2"]["OMP_NUM_THREADS"] = str(THREADS)
    figures = {}
    for name, (framework, command) in commands(args, work).items():
        log = work / f"{name.replace(' ', '_')}.log"
        figures[name] = measure(command, environments[framework], log=log)
        stage_file = work / f"{framework}_stages.json"
        if name.endswith("stages"):
            clock = json.loads(stage_file.read_text())
            figures[name]["stages"] = stage_seconds(clock, figures[name]["wall_s"])
            figures[name]["stage_peak_gb"] = {stage: b / 1e9 for stage, b in clock["peak_bytes"].items()}
        figure = figures[name]
        print(f"{kind:6s} {name:24s} {figure['wall_s']:7.1f} s   peak PSS {figure['peak_pss_gb']:5.2f} GB")
    if not args.segflow_only:
        figures["agreement"] = agreement(work)
    return figures


def stage_seconds(clock: dict, wall: float) -> dict[str, float]:
    """Every stage's seconds, "other" being the process's wall time less the wrapped stages."""
    seconds = {stage: clock["seconds"].get(stage, 0.0) for stage in STAGES if stage != "other"}
    missing = [stage for stage, s in seconds.items() if clock["calls"].get(stage, 0) == 0]
    if missing:
        raise SystemExit(f"no call was timed for {', '.join(missing)}: a wrapped function was renamed or bypassed")
    seconds["other"] = wall - sum(seconds.values())
    return seconds


def agreement(work: Path) -> dict:
    """How well the two frameworks' label maps agree (same weights, same plans): voxels equal, Dice per label;
    against nnunetv2 as it is (float16 tile accumulators) and with float32 accumulators, as segflow's."""
    return {"as_it_is": label_agreement(work, "nnunetv2_npp1"), "float32": label_agreement(work, "nnunetv2_float32")}


def label_agreement(work: Path, theirs: str) -> dict:
    import numpy as np
    import SimpleITK as sitk

    def labels(folder: str):
        (path,) = sorted((work / "predicted" / folder).glob("*.mha"))
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))

    ours, theirs = labels("segflow_predict"), labels(theirs)
    dice = {}
    for label in np.union1d(np.unique(ours), np.unique(theirs)):
        if label == 0:
            continue
        a, b = ours == label, theirs == label
        dice[int(label)] = float(2 * np.sum(a & b) / (np.sum(a) + np.sum(b)))
    return {"equal_fraction": float(np.mean(ours == theirs)), "dice": dice}


def besides_network(figure: dict) -> float:
    return figure["wall_s"] - figure["stages"]["network"]


def markdown(figures: dict) -> str:
    """Per case, the stage table (seconds) of both frameworks' stage runs, then every run's whole time and peak PSS."""
    lines = []
    for kind, runs in figures.items():
        stage_runs = [name for name in runs if name.endswith("stages")]
        lines += [f"**{kind}**, seconds per stage and the process's peak resident memory during it:", ""]
        lines += ["| stage | " + " | ".join(f"{name.split()[0]} s | GB" for name in stage_runs) + " |"]
        lines.append("|---" * (2 * len(stage_runs) + 1) + "|")
        for stage in STAGES:
            cells = [f"{runs[n]['stages'][stage]:.1f} | {runs[n]['stage_peak_gb'][stage]:.2f}" for n in stage_runs]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        cells = " | ".join(f"**{besides_network(runs[n]):.1f}** | " for n in stage_runs)
        lines += [f"| **besides the network** | {cells}|", "", "| run | whole | peak PSS |", "|---|---|---|"]
        for name, figure in runs.items():
            if name != "agreement":
                lines.append(f"| {name} | {figure['wall_s']:.1f} s | {figure['peak_pss_gb']:.2f} GB |")
        lines.append("")
    return "\n".join(lines)


def ratios(figures: dict) -> None:
    print("\nsegflow / nnunetv2:")
    for kind, runs in figures.items():
        ours, theirs = runs["segflow stages"], runs["nnunetv2 stages"]
        print(
            f"{kind:6s} besides the network {besides_network(ours) / besides_network(theirs):.2f}"
            f"   whole (segflow predict / -npp 1 -nps 1) "
            f"{runs['segflow predict']['wall_s'] / runs['nnunetv2 -npp 1 -nps 1']['wall_s']:.2f}"
            f"   peak PSS {runs['segflow predict']['peak_pss_gb'] / runs['nnunetv2 -npp 1 -nps 1']['peak_pss_gb']:.2f}"
            f"   (defaults: whole {runs['segflow predict']['wall_s'] / runs['nnunetv2 defaults']['wall_s']:.2f},"
            f" peak PSS {runs['segflow predict']['peak_pss_gb'] / runs['nnunetv2 defaults']['peak_pss_gb']:.2f})"
        )
        for accumulators, agreed in runs["agreement"].items():
            print(
                f"{kind:6s} label maps against nnunetv2's ({accumulators.replace('_', ' ')}):"
                f" {100 * agreed['equal_fraction']:.4f} % of voxels equal, Dice {agreed['dice']}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["brats", "ct"])
    parser.add_argument("--scale", type=float, default=1.0, help="each axis's size times this (smoke tests)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segflow-bench-prediction-stages"))
    parser.add_argument("--nnunet-venv", type=Path, default=Path(os.environ.get("NNUNET_VENV", "/opt/nnunet-venv")))
    parser.add_argument(
        "--feature-divisor", type=int, default=8, help="the U-Net's features per stage / K (less network time)"
    )
    parser.add_argument(
        "--step-size", type=float, default=0.5, help="the sliding window's step (fewer tiles: less network time)"
    )
    parser.add_argument(
        "--mirror", action="store_true", help="test-time mirroring in both frameworks, as their users predict"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--markdown", action="store_true", help="print the stage table as Markdown (the README's)")
    add_segflow_only(parser)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    figures = {kind: run_case(args, kind) for kind in args.cases}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if not args.segflow_only:
        ratios(figures)
    if args.markdown:
        print("\n" + markdown(figures))


if __name__ == "__main__":
    main()
