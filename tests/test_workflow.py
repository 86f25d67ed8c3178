"""The workflow run for real with Snakemake: the demo, the Hippocampus acceptance values, incremental runs."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from conftest import REPO, blob_case, load, run_snakemake, scheduled_jobs, write_case, write_msd_dataset_json

from segflow.batches import assign_batches
from segflow.config import merged, resolve

DEMO = "Task900_SegflowDemo"


def test_demo_runs_end_to_end_and_is_then_up_to_date(demo_run):
    out = demo_run / "results" / "Task900_SegflowDemo"
    plans = load(out / "plans.json")
    assert set(plans["configurations"]) == {"2d", "3d_fullres"}
    # The demo is anisotropic (about 3 x 0.8 x 0.8 mm): first-stage kernels 1 x 3 x 3, first stride (1, 2, 2).
    full = plans["configurations"]["3d_fullres"]
    assert full["architecture"]["arch_kwargs"]["kernel_sizes"][0] == [1, 3, 3]
    for config in ("2d", "3d_fullres"):
        for i in range(10):
            data = np.load(out / "preprocessed" / config / f"demo_{i:03d}.npy")
            seg = np.load(out / "preprocessed" / config / f"demo_{i:03d}_seg.npy")
            props = load(out / "preprocessed" / config / f"demo_{i:03d}.json")
            assert data.shape[0] == 2 and data.dtype == np.float32 and seg.shape[1:] == data.shape[1:]
            assert props["spacing_after_resampling"][-2:] == full["spacing"][-2:]
            assert set(np.unique(seg)) <= {-1, 0, 1, 2} and props["class_locations"]["1"]
    assert len(load(out / "splits.json")) == 5
    assert load(out / "verify_report.json")["cases"] == 10
    # Two configurations x two folds trained with the demo's tiny budget (3 epochs x 10 iterations).
    for config in ("2d", "3d_fullres"):
        for fold in (0, 1):
            folder = out / "train" / config / f"fold_{fold}"
            final = torch.load(folder / "checkpoint_final.pt", weights_only=True)
            assert final["current_epoch"] == 3 and final["fold"] == str(fold)
            assert len(final["logging"]["ema_fg_dice"]) == 3
            assert (folder / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            # What a finished fold keeps: the final and the best weights, as nnU-Net; the resumable state is the
            # final checkpoint under a second name (a hard link), so it costs no disk.
            assert (folder / "checkpoint_final.pt").samefile(folder / "checkpoint_latest.pt")
            assert (folder / "checkpoint_best.pt").is_file() and not (folder / "checkpoint_previous.pt").exists()
            epochs = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines()]
            assert [e["epoch"] for e in epochs] == [0, 1, 2] and epochs[-1]["lr"] < epochs[0]["lr"]
    check_demo_evaluation(out)
    dry = run_snakemake(demo_run, "-n")
    assert "Nothing to be done" in dry.stdout


def test_demo_shows_its_progress_on_the_terminal(demo_run):
    """Training prints a line per epoch (losses, pseudo Dice, epoch time, time left), validation one per
    case; they reach snakemake's terminal output, and no library warning does."""
    terminal = (demo_run / "snakemake.out").read_text()
    epoch_line = re.compile(
        r"(2d|3d_fullres) fold ([01]): epoch ([123])/3 train loss -?[\d.]+, val loss -?[\d.]+, "
        r"pseudo Dice [\d.]+ [\d.]+ \(EMA [\d.]+\), [\d.]+ s(, about [\d a-z]+ left)?$"
    )
    epochs = {}
    for line in terminal.splitlines():
        found = epoch_line.search(line)
        if found:
            configuration, fold, epoch, left = found.groups()
            epochs[(configuration, int(fold), int(epoch))] = left
    assert set(epochs) == {(c, f, e) for c in ("2d", "3d_fullres") for f in (0, 1) for e in (1, 2, 3)}, terminal
    assert all(epochs[key] for key in epochs if key[2] < 3)  # a time left on every epoch but the last
    for configuration in ("2d", "3d_fullres"):
        for fold in (0, 1):
            line = rf"validation of {configuration} fold {fold}: case 1/2 demo_\d+, about [\d a-z]+ left"
            assert re.search(line, terminal), terminal
    assert "Warning" not in terminal, [line for line in terminal.splitlines() if "Warning" in line]


def test_the_budget_is_shown_once_the_plans_exist_before_any_training(demo_run):
    """The preprocessing stage ends with the budget on the terminal (segflow.budget): the demo's candidates,
    folds and epochs, what its jobs declare and a time per epoch and fold from a probe of each network."""
    stage = (demo_run / "preprocessing_stage.out").read_text()
    assert "budget of Task900_SegflowDemo: 2 candidates x 2 folds (0, 1), each 3 epochs x 10 iterations" in stage
    assert "fold 0: epoch" not in stage  # shown before training: the stage does not train
    budget = load(demo_run / "results" / DEMO / "budget.json")
    plans = load(demo_run / "results" / DEMO / "plans.json")["configurations"]
    assert [c["name"] for c in budget["candidates"]] == ["2d", "3d_fullres"]
    assert budget["jobs"] | {"predict_mem_mb": 0} == {"train": 4, "validate": 4, "predict": 1, "predict_mem_mb": 0}
    for c in budget["candidates"]:
        assert c["batch_size"] == plans[c["name"]]["batch_size"] and c["patch_size"] == plans[c["name"]]["patch_size"]
        epoch = 10 * (c["train_step_s"] + c["augmentation_s"]) + 3 * c["validation_step_s"]
        assert c["epoch_s"] == epoch and c["fold_s"] == 3 * epoch and c["device"] == "cpu"
        line = (
            rf"  {c['name']}: patch {'x'.join(map(str, c['patch_size']))}, batch {c['batch_size']}; training job "
            rf"[\d.]+ GB, validation job [\d.]+ GB; on cpu \(1 thread\): {c['train_step_s']:.2f} s per iteration"
        )
        assert re.search(line, stage), stage
    assert budget["training_s"] == 2 * sum(c["fold_s"] for c in budget["candidates"])


def test_preprocessing_stage_target_stops_before_training(demo_run):
    """``snakemake preprocessing`` leaves every planned configuration's arrays, and nothing of training."""
    files = set(load(demo_run / "preprocessing_stage_files.json"))
    plans = load(demo_run / "results" / "Task900_SegflowDemo" / "plans.json")
    assert set(plans["configurations"]) == {"2d", "3d_fullres"}
    for configuration in plans["configurations"]:
        for i in range(10):
            for suffix in (".npy", "_seg.npy", ".json"):
                assert f"Task900_SegflowDemo/preprocessed/{configuration}/demo_{i:03d}{suffix}" in files
    assert not [f for f in files if f.split("/")[1] in ("train", "crossval", "predictions", "selection.json")]
    terminal = (demo_run / "preprocessing_stage.out").read_text()
    assert re.search(r"preprocessing 3d_fullres: case \d/\d demo_\d+", terminal)
    assert "rule train:" not in terminal


def test_stage_targets_name_a_missing_configuration_clearly(demo_run):
    """--list-rules lists a preprocessing rule per data configuration any plan can have; naming one the
    demo's plan lacks, or a file of such a configuration, says so instead of failing with a KeyError."""
    lowres = (
        f"results/{DEMO}/batches/preprocessed/3d_lowres/b000.json",
        f"results/{DEMO}/train/3d_lowres/fold_0/checkpoint_final.pt",
    )
    for target in lowres:
        result = run_snakemake(demo_run, "-n", target, check=False)
        assert result.returncode != 0
        message = "segflow: not planned: the plan nnUNetPlans for Task900_SegflowDemo has no configuration 3d_lowres"
        assert f"{message} (it has ['2d', '3d_fullres'])" in result.stdout, result.stdout[-2000:]
        assert "Error" not in result.stdout and "Traceback" not in result.stdout  # no stack frames


def test_the_reproduce_commands_of_the_selection_run_as_written(demo_run, tmp_path):
    """selection.json's `reproduce` commands, run where the workflow ran: snakemake finds nothing to do (the
    run's own configuration, asking for the predictions), and segflow predict on the demo's test images
    gives the workflow's predictions, with a progress line per case."""
    out = demo_run / "results" / "Task900_SegflowDemo"
    reproduce = load(out / "selection.json")["reproduce"]
    # The Snakefile lies in the checkout, not in this working directory: the one thing added is -s.
    command = shlex.split(reproduce["snakemake"])
    assert command[0] == "snakemake"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(
        [*command, "-s", str(REPO / "Snakefile")], cwd=demo_run, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0 and "Nothing to be done" in run.stderr + run.stdout, run.stderr[-3000:]
    # It predicts the demo's own test folder; it writes beside the results, here into tmp_path instead.
    command = shlex.split(reproduce["command"])
    assert command[command.index("-i") + 1] == "resources/Task900_SegflowDemo/imagesTs"
    output = command.index("-o") + 1
    assert command[output] == "results/Task900_SegflowDemo/predictions_reproduced"
    command[output] = str(tmp_path / "cli")
    run = subprocess.run(command, cwd=demo_run, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    for i, case in enumerate(("demo_500", "demo_501", "demo_502")):
        left = ", about [\\d a-z]+ left" if i < 2 else "$"
        assert re.search(rf"prediction: case {i + 1}/3 {case}.nii.gz{left}", run.stderr, re.MULTILINE), run.stderr
        cli = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "cli" / f"{case}.nii.gz")))
        workflow = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "predictions" / f"{case}.nii.gz")))
        np.testing.assert_array_equal(cli, workflow)
    assert "Warning" not in run.stderr


def check_demo_evaluation(out):
    """Validation of every (configuration, fold), cross-validation, the ensemble, the selection and the test
    predictions, all read from the files the workflow wrote."""
    splits = load(out / "splits.json")
    for config in ("2d", "3d_fullres"):
        for fold in (0, 1):
            folder = out / "train" / config / f"fold_{fold}" / "validation"
            summary = load(folder / "summary.json")
            cases = sorted(Path(c["prediction_file"]).name for c in summary["metric_per_case"])
            assert cases == [f"{c}.nii.gz" for c in splits[fold]["val"]]
            for case in splits[fold]["val"]:
                prediction = sitk.ReadImage(str(folder / f"{case}.nii.gz"))
                reference = sitk.ReadImage(str(out / "raw" / "labelsTr" / f"{case}.nii.gz"))
                assert prediction.GetSize() == reference.GetSize()
                assert np.allclose(prediction.GetOrigin(), reference.GetOrigin())
                with np.load(folder / f"{case}.npz", allow_pickle=False) as npz:  # kept for the ensemble
                    assert npz["probabilities"].shape == (3, *sitk.GetArrayFromImage(reference).shape)
        crossval = load(out / "crossval" / config / "summary.json")
        assert len(crossval["metric_per_case"]) == len(splits[0]["val"]) + len(splits[1]["val"])
        assert set(crossval["mean"]) == {"1", "2"} and 0 <= crossval["foreground_mean"]["Dice"] <= 1
    ensemble = load(out / "crossval" / "ensemble__2d__3d_fullres" / "summary.json")
    selection = load(out / "selection.json")
    assert set(selection["scores"]) == {"2d", "3d_fullres", "ensemble__2d__3d_fullres"}
    assert selection["scores"]["ensemble__2d__3d_fullres"] == ensemble["foreground_mean"]["Dice"]
    assert selection["scores"][selection["best"]] == max(selection["scores"].values())
    assert selection["folds"] == [0, 1]
    # The demo is easy: even three epochs of ten iterations segment it well.
    assert max(selection["scores"].values()) > 0.8
    for case in ("demo_500", "demo_501", "demo_502"):
        prediction = sitk.ReadImage(str(out / "predictions" / f"{case}.nii.gz"))
        image = sitk.ReadImage(str(out / "raw" / "imagesTs" / f"{case}_0000.nii.gz"))
        assert prediction.GetSize() == image.GetSize()
        assert np.allclose(prediction.GetSpacing(), image.GetSpacing())
        assert np.allclose(prediction.GetOrigin(), image.GetOrigin())
        assert np.allclose(prediction.GetDirection(), image.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) == {0, 1, 2}
    # The same model through the command line, from one of the demo's own MSD test images, with probabilities.
    images = out.parent.parent / "cli_images"
    images.mkdir()
    demo_images = out.parent.parent / "resources" / "Task900_SegflowDemo" / "imagesTs"
    (images / "demo_501.nii.gz").symlink_to(demo_images / "demo_501.nii.gz")
    cli_out = out.parent.parent / "cli_predictions"
    command = [sys.executable, "-m", "segflow.cli", "predict", "-i", str(images), "-o", str(cli_out), "-m", str(out)]
    terminal = subprocess.run([*command, "--save-probabilities"], capture_output=True, text=True, check=True).stderr
    assert [line.split(" ", 1)[1] for line in terminal.splitlines() if "case 1/1" in line] == [
        "prediction: case 1/1 demo_501.nii.gz"
    ], terminal  # each progress line once (it was printed a second time with an INFO prefix)
    cli = sitk.GetArrayFromImage(sitk.ReadImage(str(cli_out / "demo_501.nii.gz")))
    workflow = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "predictions" / "demo_501.nii.gz")))
    np.testing.assert_array_equal(cli, workflow)
    with np.load(cli_out / "demo_501.npz", allow_pickle=False) as npz:
        assert npz["probabilities"].shape == (3, *cli.shape)
        np.testing.assert_allclose(npz["probabilities"].sum(0), 1, atol=1e-5)


def test_hippocampus_plans_and_splits(hippocampus, hippocampus_run):
    plans = load(hippocampus_run / "plans.json")
    full, flat = plans["configurations"]["3d_fullres"], plans["configurations"]["2d"]
    assert full["patch_size"] == [40, 56, 40] and full["batch_size"] == 9 and full["spacing"] == [1.0, 1.0, 1.0]
    assert full["architecture"]["arch_kwargs"]["n_stages"] == 4
    assert flat["patch_size"] == [56, 40] and flat["batch_size"] == 366
    assert "3d_lowres" not in plans["configurations"]
    splits = load(hippocampus_run / "splits.json")
    assert len(splits[0]["val"]) == 52
    ids = sorted(p.name[: -len(".nii.gz")] for p in (hippocampus / "labelsTr").glob("hippocampus_*.nii.gz"))
    assert len(ids) == 260
    vals = sorted(c for s in splits for c in s["val"])
    assert vals == ids
    for s in splits:
        assert sorted(s["train"] + s["val"]) == ids and not set(s["train"]) & set(s["val"])


def test_hippocampus_budget_is_shown_once_planned(hippocampus_run):
    """nnU-Net's budget (1000 x 250 per fold) for a run that trains no fold: each candidate's plan and the memory
    its jobs would declare, and nothing timed (the demo's tests time the planned networks)."""
    terminal = (hippocampus_run.parent.parent / "snakemake.out").read_text()
    assert "budget of Task04_Hippocampus: 2 candidates x 0 folds, each 1000 epochs x 250 iterations" in terminal
    budget = load(hippocampus_run / "budget.json")
    assert {c["name"]: c["batch_size"] for c in budget["candidates"]} == {"2d": 366, "3d_fullres": 9}
    assert budget["jobs"]["train"] == 0 and budget["training_s"] == 0
    for c in budget["candidates"]:
        assert c["fold_s"] is None and c["not_timed"] == "not timed: the run trains no fold"
        patch = "x".join(map(str, c["patch_size"]))
        line = rf"  {c['name']}: patch {patch}, batch {c['batch_size']}; training job ([\d.]+) GB, .*; not timed"
        shown = re.search(line, terminal)
        assert shown and float(shown[1]) == round(c["train_mem_mb"] / 1024, 1) and c["train_mem_mb"] > 1024, terminal


def test_hippocampus_preprocessed_arrays(hippocampus, hippocampus_run):
    """Spacing is 1 mm everywhere, so there is no resampling: the 3d_fullres array must be the raw image, cut
    to the stored crop box and z-scored over the whole box (Hippocampus' crop keeps most of each image, so
    the plan normalises without the mask), computed here from the raw file alone."""
    plans = load(hippocampus_run / "plans.json")
    assert plans["configurations"]["3d_fullres"]["use_mask_for_norm"] == [False]
    for case in ("hippocampus_001", "hippocampus_367"):
        data = np.load(hippocampus_run / "preprocessed" / "3d_fullres" / f"{case}.npy")
        props = load(hippocampus_run / "preprocessed" / "3d_fullres" / f"{case}.json")
        raw = sitk.GetArrayFromImage(sitk.ReadImage(str(hippocampus / "imagesTr" / f"{case}.nii.gz")))
        box = tuple(slice(lo, hi) for lo, hi in props["bbox_used_for_cropping"])
        cropped = raw[box].astype(np.float64)
        assert data.shape == (1, *cropped.shape) and data.dtype == np.float32
        expected = (cropped - cropped.mean()) / max(cropped.std(), 1e-8)
        np.testing.assert_allclose(data[0], expected, rtol=0, atol=1e-5)


def test_adding_a_case_reruns_only_its_batch(tmp_path):
    source = tmp_path / "Task77_Blobs"
    cases = [f"blob_{i:02d}" for i in range(8)]
    for i, case in enumerate(cases):
        image, label = blob_case(i, shape=(16, 18, 17))
        write_case(source, case, image, label, layout="msd")
    write_msd_dataset_json(source, cases)
    config = {"dataset": str(source), "case_batches": 4, "folds": "[]"}
    run_snakemake(tmp_path, config=config)
    out = tmp_path / "results" / "Task77_Blobs"
    before = {p: p.stat().st_mtime_ns for p in (out / "preprocessed").rglob("*") if p.is_file()}
    plans_before = load(out / "plans.json")

    new = "blob_99"
    image, label = blob_case(99, shape=(16, 18, 17))
    write_case(source, new, image, label, layout="msd")
    write_msd_dataset_json(source, [*cases, new])
    batch = next(b for b, members in assign_batches([*cases, new], 4).items() if new in members)
    batch_cases = assign_batches([*cases, new], 4)[batch]

    dry = run_snakemake(tmp_path, "-n", config=config)
    jobs = scheduled_jobs(dry.stdout)
    # Before the plan (a checkpoint) has run, preprocessing is not yet scheduled; only the new case's batch
    # is converted, verified and cropped, plus the aggregations over all cases.
    assert jobs == {
        "convert_dataset_json": 1,
        f"convert_{batch}": 1,
        f"verify_{batch}": 1,
        f"crop_{batch}": 1,
        "verify_report": 1,
        "fingerprint": 1,
        "plan": 1,
        "budget": 1,
        "splits": 1,
        "all": 1,
    }, jobs
    run = run_snakemake(tmp_path, config=config)
    # The plan keeps its preprocessing-relevant content, so only the new case's batch is preprocessed.
    preprocessed = re.findall(r"rule (preprocess_b\d+):\n(?:.*\n)*?\s+wildcards: folder=(\S+)", run.stdout)
    assert sorted(preprocessed) == [(f"preprocess_{batch}", c) for c in ("2d", "3d_fullres")]
    plans_after = load(out / "plans.json")
    for name in ("2d", "3d_fullres"):
        assert plans_after["configurations"][name]["spacing"] == plans_before["configurations"][name]["spacing"]
    for path, mtime in before.items():
        case = path.name.split(".")[0].removesuffix("_seg")
        if case not in batch_cases:
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    assert (out / "preprocessed" / "3d_fullres" / f"{new}.npy").is_file()
    assert "Nothing to be done" in run_snakemake(tmp_path, "-n", config=config).stdout


def test_plans_json_is_a_target(tmp_path):
    run_snakemake(tmp_path, "results/Task900_SegflowDemo/plans.json")
    out = tmp_path / "results" / "Task900_SegflowDemo"
    assert (out / "plans.json").is_file() and not (out / "preprocessed").exists()
    assert json.loads((out / "fingerprint.json").read_text())["spacings"]


def test_lint_is_clean(tmp_path):
    result = run_snakemake(tmp_path, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in result.stdout


def test_region_based_training_on_the_demo(tmp_path):
    """The demo's labels as nested regions (organ = organ + lesion, lesion): sigmoid outputs per region,
    evaluation per region, and label maps painted in regions_class_order."""
    settings = {
        # Region handling is the same in 2D, and 2D trains several times faster (twice the demo's epochs
        # here: three leave the regions' Dice near 0.4).
        "configurations": ["2d"],
        "folds": [0],
        "case_batches": 2,
        "train": {"epochs": 6, "threads": 2},
        "inference": {"mirror": False},
        "labels": {"background": 0, "organ": [1, 2], "lesion": 2},
        "regions_class_order": [1, 2],
    }
    (tmp_path / "regions.yaml").write_text(json.dumps(settings))
    run_snakemake(tmp_path, "--configfile", str(tmp_path / "regions.yaml"))
    out = tmp_path / "results" / "Task900_SegflowDemo"
    dataset_json = load(out / "raw" / "dataset.json")
    assert dataset_json["labels"]["organ"] == [1, 2] and dataset_json["regions_class_order"] == [1, 2]
    weights = torch.load(out / "train" / "2d" / "fold_0" / "checkpoint_final.pt", weights_only=True)
    heads = [
        v for k, v in weights["network_weights"].items() if k.startswith("decoder.seg_layers.") and k.endswith("weight")
    ]
    assert all(h.shape[0] == 2 for h in heads), "one sigmoid output per region"
    crossval = load(out / "crossval" / "2d" / "summary.json")
    assert set(crossval["mean"]) == {"(1, 2)", "2"}
    selection = load(out / "selection.json")
    assert selection["configurations"] == ["2d"] and selection["scores"]["2d"] > 0.5
    for case in ("demo_500", "demo_501", "demo_502"):
        values = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "predictions" / f"{case}.nii.gz")))))
        assert values == {0, 1, 2}


def test_example_configs_validate_and_plan_a_run(tmp_path, hippocampus):
    """Every example, on top of the default config as Snakemake merges them, passes the schema; the
    Hippocampus example with the quick CPU budget dry-runs on the real data."""
    import yaml

    examples = REPO / "config" / "examples"
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for example in sorted(examples.glob("*.yaml")):
        resolve(merged(base, yaml.safe_load(example.read_text())), schema)
    brain = merged(base, yaml.safe_load((examples / "Task01_BrainTumour.yaml").read_text()))
    assert brain["labels"]["tumour_core"] == [2, 3] and brain["regions_class_order"] == [1, 2, 3]
    files = [str(examples / "Task04_Hippocampus.yaml"), str(examples / "quick_cpu.yaml")]
    dry = run_snakemake(tmp_path, "-n", "--configfile", *files, config={"dataset": str(hippocampus)})
    jobs = scheduled_jobs(dry.stdout)
    assert jobs["convert_b000"] == 1 and jobs["plan"] == 1
