"""Planners as an axis of the run: candidate names, and the demo run growing by a residual-encoder preset
that shares the default planner's data, trains only its own folds, and joins the one selection."""

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import load, run_snakemake, scheduled_jobs

from segflow.candidates import Candidate, parse
from segflow.cli import main
from segflow.plan import data_folder, plan_experiment

DEMO = "Task900_SegflowDemo"


def test_candidate_names_round_trip():
    assert Candidate("3d_fullres").name == "3d_fullres" and parse("3d_fullres") == Candidate("3d_fullres")
    resenc = parse("3d_cascade_fullres-resenc_l")
    assert resenc == Candidate("3d_cascade_fullres", "resenc_l") and resenc.plans_file == "plans_resenc_l.json"
    assert resenc.with_configuration("3d_lowres").name == "3d_lowres-resenc_l"
    with pytest.raises(ValueError, match="planner 'resenc_s'"):
        parse("3d_fullres-resenc_s")


def test_presets_preprocess_only_their_own_lowres():
    from test_plan import load_case

    case = load_case("large")
    default = plan_experiment(case["fingerprint"], case["dataset_json"])
    resenc = plan_experiment(case["fingerprint"], case["dataset_json"], planner="resenc_m")
    assert [data_folder(default, c) for c in default["configurations"]] == [
        "2d",
        "3d_lowres",
        "3d_fullres",
        "3d_fullres",
    ]
    assert [data_folder(resenc, c) for c in resenc["configurations"]] == [
        "2d",
        "nnUNetResEncUNetMPlans_3d_lowres",
        "3d_fullres",
        "3d_fullres",
    ]


def modification_times(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_a_preset_joins_a_finished_run_and_trains_only_its_own_candidate(tmp_path):
    """A finished demo run of the default planner (3d_fullres, one fold, a tiny budget), then ResEnc M beside
    it. The default candidate does not train again and nothing is preprocessed again (ResEnc M's 3d_fullres
    data are the default's); ResEnc M trains, validates and joins the selection and the report; adding ResEnc L
    afterwards schedules its jobs alone, and those that compare candidates."""
    budget = "{epochs: 1, iterations_per_epoch: 4, val_iterations: 1, threads: 2}"
    base = {
        "configurations": "[3d_fullres]",
        "folds": "[0]",
        "train": budget,
        "inference": "{mirror: false}",
        "test_images": "null",
    }
    run_snakemake(tmp_path, config=base)
    out = tmp_path / "results" / DEMO
    trained = [p for p in (out / "train" / "3d_fullres").rglob("*") if "validation" not in p.parts]
    kept = {**modification_times(out / "preprocessed"), **{p: p.stat().st_mtime_ns for p in trained if p.is_file()}}
    grown = {**base, "planners": "[default,resenc_m]"}

    # Before ResEnc M's plan (a checkpoint) exists, only the plan is scheduled.
    assert scheduled_jobs(run_snakemake(tmp_path, "-n", config=grown).stdout) == {"plan_preset": 1, "all": 1}
    run = run_snakemake(tmp_path, config=grown)
    assert "rule preprocess_" not in run.stdout
    changed = [str(path) for path, mtime in kept.items() if path.stat().st_mtime_ns != mtime]
    assert not changed, f"rewritten: {changed}"
    # The default's validation ran once more: alone, it kept no probabilities; the ensemble needs them.
    assert any((out / "train" / "3d_fullres" / "fold_0" / "validation").glob("*.npz"))
    plans = load(out / "plans_resenc_m.json")
    assert plans["plans_name"] == "nnUNetResEncUNetMPlans"
    assert plans["configurations"]["3d_fullres"]["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert (out / "train" / "3d_fullres-resenc_m" / "fold_0" / "validation" / "summary.json").is_file()
    selection = load(out / "selection.json")
    ensemble = "ensemble__3d_fullres__3d_fullres-resenc_m"
    assert set(selection["scores"]) == {"3d_fullres", "3d_fullres-resenc_m", ensemble}
    assert all(0 <= score <= 1 for score in selection["scores"].values())
    crossval_table = (out / "report" / "crossval.html").read_text()
    assert "3d_fullres-resenc_m" in crossval_table and ensemble in crossval_table
    plans_table = (out / "report" / "plans.html").read_text()
    assert "nnUNetResEncUNetMPlans" in plans_table and "ResidualEncoderUNet" in plans_table
    assert "Nothing to be done" in run_snakemake(tmp_path, "-n", config=grown).stdout

    # segflow predict with the preset's candidate named on the command line.
    images = tmp_path / "resources" / DEMO / "imagesTs"
    predicted = tmp_path / "predicted"
    command = ["predict", "-m", str(out), "-c", "3d_fullres-resenc_m", "--disable-tta"]
    main([*command, "-i", str(images), "-o", str(predicted)])
    for case in ("demo_500", "demo_501", "demo_502"):
        image = sitk.ReadImage(str(images / f"{case}.nii.gz"))
        segmentation = sitk.ReadImage(str(predicted / f"{case}.nii.gz"))
        assert segmentation.GetSize() == image.GetSize()[:3]
        assert set(np.unique(sitk.GetArrayFromImage(segmentation))) <= {0, 1, 2}

    # A third candidate: once its plan exists, only its jobs and those comparing candidates are scheduled.
    third = {**grown, "planners": "[default,resenc_m,resenc_l]"}
    run_snakemake(tmp_path, f"results/{DEMO}/plans_resenc_l.json", config=third)
    jobs = scheduled_jobs(run_snakemake(tmp_path, "-n", config=third).stdout)
    assert jobs == {
        "train": 1,
        "validate": 1,
        "crossval": 1,
        "ensemble": 2,
        "select": 1,
        "report_tables": 1,
        "report_overlays": 1,
        "all": 1,
    }, jobs
