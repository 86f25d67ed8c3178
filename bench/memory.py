"""Benchmark: peak memory of preprocessing, validation export and prediction of one large case, segflow against
nnunetv2 2.8.1, in one run on this machine.

Cases (synthetic, written by this script; ``--cases`` picks):

* ``brats``: a BraTS-size MRI case, 4 channels of 155 x 240 x 240 at 1 mm, zero outside a brain-shaped
  ellipsoid, three nested tumour labels;
* ``ct``: a 512 x 512 x 1 000 CT (int16 HU, 0.75 x 0.75 x 1 mm, air outside an elliptic body, so the non-zero
  crop keeps the whole image) with two organ labels. The plan's 3d_fullres spacing is set to 1 x 0.8 x 0.8 mm
  (a dataset whose median in-plane spacing is 0.8 mm), so preprocessing and export resample.

Both frameworks get the same plans (segflow's planner on the one case; nnunetv2 2.8.1 plans the same, as the
parity tests show) with the U-Net's features divided by 8, which keeps the CPU prediction short and changes no
array that preprocessing or export hold. Per stage, one process per framework, each timed and watched:

1. preprocessing of the labelled case for 3d_fullres: segflow's ``preprocess_case``, nnunetv2's
   ``DefaultPreprocessor.run_case_save``;
2. validation export: logits on the preprocessed grid (as each framework's sliding window returns them:
   float32 for segflow, float16 for nnunetv2) turned into the label map in the original geometry and written,
   as each one's validation does for a fold's case (no probabilities: nnunetv2's default, and segflow's unless
   ensembles are selected);
3. prediction of the image from raw file to written label map with a freshly initialised fold 0 (written as an
   nnU-Net model folder, which both read): ``segflow predict -m`` and ``nnUNetv2_predict_from_modelfolder
   -npp 1 -nps 1`` (its fewest workers), both without test-time mirroring.

Memory is the peak over time of the proportional set size (PSS) summed over the process tree, sampled every
50 ms: what a cluster's memory cgroup charges a job, nnunetv2's worker processes included, shared library pages
counted once. The largest single process's peak RSS is printed beside it.

Usage: python bench/memory.py [--cases brats ct] [--work DIR] [--json FILE]
       python bench/memory.py --segflow-only --scale 0.25   (segflow alone, a quarter of each size: CI's smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from benchlib import REPO, add_segflow_only, measure, nnunet_env, nnunet_plans

CONFIGURATION = "3d_fullres"
FEATURE_DIVISOR = 8
CT_TARGET_SPACING = [1.0, 0.8, 0.8]
STAGES = ("preprocessing", "validation export", "prediction")


# --- the synthetic cases ----------------------------------------------------------------------------------


def ellipsoid(shape, centre, radii):
    """Boolean mask of an axis-aligned ellipsoid, ``centre`` and ``radii`` as fractions of ``shape``."""
    import numpy as np

    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    distance = sum(((g - c * s) / (r * s)) ** 2 for g, c, r, s in zip(grids, centre, radii, shape, strict=True))
    return distance <= 1


def brats_case(scale: float):
    """4 x Z x Y x X float32 MRI channels (zero outside the brain), the label map and the spacing."""
    import numpy as np

    shape = [round(s * scale) for s in (155, 240, 240)]
    rng = np.random.default_rng(0)
    brain = ellipsoid(shape, (0.5, 0.5, 0.5), (0.42, 0.4, 0.33))
    seg = np.zeros(shape, dtype=np.uint8)
    seg[ellipsoid(shape, (0.55, 0.4, 0.6), (0.16, 0.14, 0.12))] = 2  # oedema
    seg[ellipsoid(shape, (0.55, 0.4, 0.6), (0.09, 0.08, 0.07))] = 3  # enhancing tumour
    seg[ellipsoid(shape, (0.55, 0.4, 0.6), (0.05, 0.04, 0.04))] = 1  # necrosis
    channels = []
    for c in range(4):
        image = rng.normal(400 + 100 * c, 40, shape).astype(np.float32) + 150 * seg
        image[~brain] = 0
        channels.append(image)
    return channels, seg, [1.0, 1.0, 1.0]


def ct_case(scale: float):
    """A one-channel int16 CT (air outside an elliptic body), its label map and the spacing."""
    import numpy as np

    shape = [round(s * scale) for s in (1000, 512, 512)]
    rng = np.random.default_rng(1)
    body = ellipsoid(shape[1:], (0.5, 0.5), (0.4, 0.46))
    image = np.full(shape, -1000, dtype=np.int16)
    for z in range(shape[0]):  # slice by slice: the noise of the whole volume would be 2 GB of float64
        image[z][body] = rng.normal(40, 20, int(body.sum())).astype(np.int16)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[ellipsoid(shape, (0.45, 0.45, 0.35), (0.12, 0.2, 0.18))] = 1  # liver
    seg[ellipsoid(shape, (0.5, 0.55, 0.68), (0.05, 0.06, 0.05))] = 2  # kidney
    image[seg == 1] += 60
    image[seg == 2] += 120
    return [image], seg, [1.0, 0.75, 0.75]


CASES = {"brats": brats_case, "ct": ct_case}


def write_raw(kind: str, scale: float, raw: Path) -> None:
    """An nnU-Net v2 raw folder (MHA files: uncompressed, which keeps writing 0.5 GB quick) with the case as
    its one training case, and the same image in imagesTs."""
    import numpy as np

    from segflow.io import save_json

    channels, seg, spacing = CASES[kind](scale)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (raw / folder).mkdir(parents=True, exist_ok=True)
    geometry = {"spacing": spacing[::-1], "origin": [0.0, 0.0, 0.0], "direction": list(np.eye(3).ravel())}
    for c, image in enumerate(channels):
        write_mha(image, geometry, raw / "imagesTr" / f"{kind}_{c:04d}.mha")
        os.link(raw / "imagesTr" / f"{kind}_{c:04d}.mha", raw / "imagesTs" / f"{kind}_{c:04d}.mha")
    write_mha(seg, geometry, raw / "labelsTr" / f"{kind}.mha")
    labels = {"background": 0, "necrosis": 1, "oedema": 2, "enhancing": 3} if kind == "brats" else None
    labels = labels or {"background": 0, "liver": 1, "kidney": 2}
    names = {str(c): ("CT" if kind == "ct" else f"MR{c}") for c in range(len(channels))}
    dataset_json = {"channel_names": names, "labels": labels, "numTraining": 1, "file_ending": ".mha"}
    save_json({**dataset_json, "name": kind}, raw / "dataset.json")


def write_mha(array, geometry: dict, path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    sitk.WriteImage(image, str(path), useCompression=False)


def write_plans(kind: str, raw: Path, work: Path, divisor: int = FEATURE_DIVISOR) -> dict:
    """segflow's plans for the one case, 3d_fullres's features divided by ``divisor`` (the CT: its spacing
    1 x 0.8 x 0.8)."""
    from segflow.crop import crop_case
    from segflow.fingerprint import build_fingerprint
    from segflow.io import load_json, save_json
    from segflow.plan import plan_experiment

    images = sorted(str(p) for p in (raw / "imagesTr").glob("*.mha"))
    crop_case(kind, images, raw / "labelsTr" / f"{kind}.mha", work / "crop.json", work / "foreground.npy")
    fingerprint = build_fingerprint([work / "crop.json"], [work / "foreground.npy"])
    plans = plan_experiment(fingerprint, load_json(raw / "dataset.json"), None, f"Dataset999_{kind}")
    configuration = plans["configurations"][CONFIGURATION]
    kwargs = configuration["architecture"]["arch_kwargs"]
    kwargs["features_per_stage"] = [max(2, f // divisor) for f in kwargs["features_per_stage"]]
    if kind == "ct":
        configuration["spacing"] = CT_TARGET_SPACING
    plans = nnunet_plans(plans, f"Dataset999_{kind}")
    save_json(plans, work / "plans.json")
    return plans


def write_model(plans: dict, raw: Path, folder: Path) -> None:
    """A freshly initialised fold 0 as an nnU-Net v2 model folder (seeded): what both frameworks predict with."""
    import torch

    from segflow.io import load_json, save_json
    from segflow.networks import build_network
    from segflow.nnunet_models import NNUNET_FINAL_CHECKPOINT, nnunet_checkpoint
    from segflow.plans import resolved_configuration

    dataset_json = load_json(raw / "dataset.json")
    (folder / "fold_0").mkdir(parents=True)
    save_json(plans, folder / "plans.json")
    save_json(dataset_json, folder / "dataset.json")
    torch.manual_seed(0)
    configuration = resolved_configuration(plans, CONFIGURATION)
    network = build_network(configuration, len(dataset_json["channel_names"]), len(dataset_json["labels"]))
    checkpoint = {"network_weights": network.state_dict(), "inference_allowed_mirroring_axes": [0, 1, 2]}
    exported = nnunet_checkpoint(checkpoint, plans, CONFIGURATION, 0, dataset_json)
    torch.save(exported, folder / "fold_0" / NNUNET_FINAL_CHECKPOINT)


def write_logits(work: Path, plans: dict) -> None:
    """Logits on segflow's preprocessed grid, from its label map (+2 for the label, -2 elsewhere): float32 for
    segflow, float16 for nnunetv2, as each one's sliding window returns them."""
    import numpy as np

    from segflow.io import load_json

    seg = np.load(work / "segflow" / "case_seg.npy", mmap_mode="r")[0]
    classes = len(load_json(work / "raw" / "dataset.json")["labels"])
    logits = np.lib.format.open_memmap(work / "logits.npy", "w+", np.float32, (classes, *seg.shape))
    half = np.lib.format.open_memmap(work / "logits_half.npy", "w+", np.float16, (classes, *seg.shape))
    for k in range(classes):
        logits[k] = np.where(seg == k, 2.0, -2.0)
        half[k] = logits[k]
    logits.flush()
    half.flush()
    del logits, half


# --- the commands -----------------------------------------------------------------------------------------

SEGFLOW_PREPROCESS = """
import sys
from segflow.io import load_json
from segflow.plans import PlanConfiguration
from segflow.preprocess import preprocess_case
work, kind = sys.argv[1:3]
raw = f"{work}/raw"
channels = len(load_json(f"{raw}/dataset.json")["channel_names"])
images = [f"{raw}/imagesTr/{kind}_{c:04d}.mha" for c in range(channels)]
labels = load_json(f"{raw}/dataset.json")["labels"]
out = f"{work}/segflow/case"
configuration = PlanConfiguration.of(load_json(f"{work}/plans.json"), "3d_fullres")
preprocess_case(kind, images, f"{raw}/labelsTr/{kind}.mha", configuration, labels,
                out + ".npy", out + "_seg.npy", out + ".json")
"""

NNUNET_PREPROCESS = """
import sys
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from batchgenerators.utilities.file_and_folder_operations import load_json
work, kind = sys.argv[1:3]
raw = f"{work}/raw"
dataset_json = load_json(f"{raw}/dataset.json")
images = [f"{raw}/imagesTr/{kind}_{c:04d}.mha" for c in range(len(dataset_json["channel_names"]))]
plans = PlansManager(f"{work}/plans.json")
DefaultPreprocessor(verbose=False).run_case_save(f"{work}/nnunet/case", images, f"{raw}/labelsTr/{kind}.mha", plans,
                                                 plans.get_configuration("3d_fullres"), dataset_json)
"""

SEGFLOW_EXPORT = """
import sys
from segflow.io import load_json, load_npy
from segflow.export import export_prediction
from segflow.plans import PlanConfiguration
work = sys.argv[1]
dataset_json = load_json(f"{work}/raw/dataset.json")
logits = load_npy(f"{work}/logits.npy")
configuration = PlanConfiguration.of(load_json(f"{work}/plans.json"), "3d_fullres")
export_prediction(logits, load_json(f"{work}/segflow/case.json"), configuration, dataset_json,
                  f"{work}/segflow/validation.mha")
"""

NNUNET_EXPORT = """
import sys
import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json, load_pickle
from nnunetv2.inference.export_prediction import export_prediction_from_logits
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
work = sys.argv[1]
plans = PlansManager(f"{work}/plans.json")
logits = torch.from_numpy(np.load(f"{work}/logits_half.npy"))
export_prediction_from_logits(logits, load_pickle(f"{work}/nnunet/case.pkl"), plans.get_configuration("3d_fullres"),
                              plans, load_json(f"{work}/raw/dataset.json"), f"{work}/nnunet/validation", False, 2)
"""


def commands(args, work: Path, kind: str) -> dict[str, dict[str, list[str]]]:
    """Per stage, the command of each framework."""
    nnunet_python = str(args.nnunet_venv / "bin" / "python")
    model = work / "model" / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}"
    segflow_predict = [sys.executable, "-m", "segflow.cli", "predict", "-i", str(work / "raw" / "imagesTs")]
    segflow_predict += ["-o", str(work / "segflow" / "predicted"), "-m", str(model), "-f", "0"]
    nnunet_predict = [str(args.nnunet_venv / "bin" / "nnUNetv2_predict_from_modelfolder")]
    nnunet_predict += ["-i", str(work / "raw" / "imagesTs"), "-o", str(work / "nnunet" / "predicted")]
    nnunet_predict += ["-m", str(model), "-f", "0", "-npp", "1", "-nps", "1", "--disable_progress_bar"]
    return {
        "preprocessing": {
            "segflow": [sys.executable, "-c", SEGFLOW_PREPROCESS, str(work), kind],
            "nnunetv2": [nnunet_python, "-c", NNUNET_PREPROCESS, str(work), kind],
        },
        "validation export": {
            "segflow": [sys.executable, "-c", SEGFLOW_EXPORT, str(work)],
            "nnunetv2": [nnunet_python, "-c", NNUNET_EXPORT, str(work)],
        },
        "prediction": {
            "segflow": [*segflow_predict, "--device", "cpu", "--disable-tta", "--no-postprocessing"],
            "nnunetv2": [*nnunet_predict, "-device", "cpu", "--disable_tta"],
        },
    }


def run_case(args, kind: str) -> dict:
    work = args.work / kind
    shutil.rmtree(work, ignore_errors=True)
    for folder in ("segflow", "nnunet"):
        (work / folder).mkdir(parents=True)
    write_raw(kind, args.scale, work / "raw")
    plans = write_plans(kind, work / "raw", work)
    write_model(plans, work / "raw", work / "model" / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}")
    env = nnunet_env(work / "nnunet_folders", args.nnunet_venv, OMP_NUM_THREADS="2")
    segflow_env = dict(os.environ, PYTHONPATH=str(REPO))
    frameworks = ["segflow"] if args.segflow_only else ["segflow", "nnunetv2"]
    figures = {}
    for stage, by_framework in commands(args, work, kind).items():
        if stage == "validation export":
            write_logits(work, plans)
        figures[stage] = {}
        for framework in frameworks:
            log = work / f"{framework}_{stage.replace(' ', '_')}.log"
            figures[stage][framework] = measure(
                by_framework[framework], env if framework == "nnunetv2" else segflow_env, log=log
            )
            report(kind, stage, framework, figures[stage][framework])
    figures["shape"] = shape_of(work)
    return figures


def shape_of(work: Path) -> list[int]:
    import numpy as np

    return list(np.load(work / "segflow" / "case.npy", mmap_mode="r").shape)


def report(kind: str, stage: str, framework: str, figure: dict) -> None:
    print(
        f"{kind:6s} {stage:18s} {framework:9s} {figure['wall_s']:7.1f} s"
        f"   peak PSS tree {figure['peak_pss_gb']:5.2f} GB   largest process RSS {figure['peak_largest_gb']:5.2f} GB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["brats", "ct"])
    parser.add_argument("--scale", type=float, default=1.0, help="each axis's size times this (smoke tests)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segflow-bench-memory"))
    parser.add_argument("--nnunet-venv", type=Path, default=Path(os.environ.get("NNUNET_VENV", "/opt/nnunet-venv")))
    parser.add_argument("--json", type=Path, help="write the figures here")
    add_segflow_only(parser)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    figures = {kind: run_case(args, kind) for kind in args.cases}
    if not args.segflow_only:
        print("\nsegflow / nnunetv2, peak PSS of the process tree:")
        for kind, by_stage in figures.items():
            ratios = [by_stage[s]["segflow"]["peak_pss_gb"] / by_stage[s]["nnunetv2"]["peak_pss_gb"] for s in STAGES]
            print(f"{kind:6s} " + "   ".join(f"{s} {r:.2f}" for s, r in zip(STAGES, ratios, strict=True)))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
