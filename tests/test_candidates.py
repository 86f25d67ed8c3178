"""Planners and networks as axes of the run: candidate names, and the demo run growing by a residual-encoder
preset and a MONAI network that share the default planner's data, train only their own folds, and join the
one selection."""

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import assert_every_job_used_less_than_it_declared, load, run_snakemake, scheduled_jobs, tiny_run

from segflow.candidates import Candidate, parse
from segflow.cli import main
from segflow.plan import plan_experiment
from segflow.plans import data_folder

DEMO = "Task900_SegflowDemo"


def test_candidate_names_round_trip():
    assert Candidate("3d_fullres").name == "3d_fullres" and parse("3d_fullres") == Candidate("3d_fullres")
    resenc = parse("3d_cascade_fullres-resenc_l")
    assert resenc == Candidate("3d_cascade_fullres", "resenc_l") and resenc.plans_file == "plans_resenc_l.json"
    assert resenc.with_configuration("3d_lowres").name == "3d_lowres-resenc_l"
    swin = parse("2d-swinunetr")
    assert swin == Candidate("2d", "default", "swinunetr") and swin.plans_file == "plans_swinunetr.json"
    both = Candidate("3d_lowres", "resenc_m", "segresnet")
    assert both.name == "3d_lowres-resenc_m-segresnet" and parse(both.name) == both
    assert both.plans_file == "plans_resenc_m_segresnet.json"
    for wrong in ("3d_fullres-resenc_s", "3d_fullres-segresnet-resenc_m", "3d_fullres-segresnet-swinunetr"):
        with pytest.raises(ValueError, match="not <configuration>"):
            parse(wrong)


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


@pytest.mark.slow
def test_a_preset_and_a_monai_network_join_a_finished_run_and_train_only_their_own_candidates(tmp_path):
    """A finished demo run of the default planner (3d_fullres, one fold, a tiny budget), then ResEnc M and
    MONAI's SegResNet beside it: three candidates more (ResEnc M's U-Net, SegResNet on the default plans and on
    ResEnc M's). The default candidate does not train again and nothing is preprocessed again (they all train
    on the default's 3d_fullres data); the new ones train, validate and join the selection and the report;
    adding ResEnc L afterwards schedules its two candidates' jobs alone, and those that compare candidates."""
    base = tiny_run(configurations="[3d_fullres]")
    run_snakemake(tmp_path, config=base)
    out = tmp_path / "results" / DEMO
    trained = [p for p in (out / "train" / "3d_fullres").rglob("*") if "validation" not in p.parts]
    kept = {**modification_times(out / "preprocessed"), **{p: p.stat().st_mtime_ns for p in trained if p.is_file()}}
    grown = {**base, "planners": "[default,resenc_m]", "networks": "[default,segresnet]"}

    # Before ResEnc M's plan (a checkpoint) exists, only the plans are scheduled, and the budget of the new
    # candidate list.
    jobs = scheduled_jobs(run_snakemake(tmp_path, "-n", config=grown).stdout)
    assert jobs == {"plan_preset": 1, "network_plans": 2, "budget": 1, "all": 1}, jobs
    run = run_snakemake(tmp_path, config=grown)
    assert "rule preprocess_" not in run.stdout
    changed = [str(path) for path, mtime in kept.items() if path.stat().st_mtime_ns != mtime]
    assert not changed, f"rewritten: {changed}"
    # The default's validation ran once more: alone, it kept no probabilities; the ensembles need them.
    assert any((out / "train" / "3d_fullres" / "fold_0" / "validation").glob("*.npz"))
    plans = load(out / "plans_resenc_m.json")
    assert plans["plans_name"] == "nnUNetResEncUNetMPlans"
    assert plans["configurations"]["3d_fullres"]["data_identifier"] == "nnUNetPlans_3d_fullres"
    segresnet = load(out / "plans_resenc_m_segresnet.json")["configurations"]["3d_fullres"]
    resenc = plans["configurations"]["3d_fullres"]
    assert segresnet["architecture"]["network_class_name"] == "monai.networks.nets.SegResNetDS"
    assert segresnet["architecture"]["arch_kwargs"]["resolution"] == resenc["spacing"]
    same = ("data_identifier", "patch_size", "batch_size", "spacing")
    assert {k: segresnet[k] for k in same} == {k: resenc[k] for k in same}
    names = ["3d_fullres", "3d_fullres-segresnet", "3d_fullres-resenc_m", "3d_fullres-resenc_m-segresnet"]
    for name in names[1:]:
        assert (out / "train" / name / "fold_0" / "validation" / "summary.json").is_file()
    selection = load(out / "selection.json")
    ensembles = [f"ensemble__{a}__{b}" for i, a in enumerate(names) for b in names[i + 1 :]]
    assert set(selection["scores"]) == {*names, *ensembles}
    assert all(0 <= score <= 1 for score in selection["scores"].values())
    crossval_table = (out / "report" / "crossval.html").read_text()
    assert all(name in crossval_table for name in [*names, *ensembles])
    plans_table = (out / "report" / "plans.html").read_text()
    for shown in ("nnUNetResEncUNetMPlans", "ResidualEncoderUNet", "SegResNetDS"):
        assert shown in plans_table
    assert "Nothing to be done" in run_snakemake(tmp_path, "-n", config=grown).stdout
    # Every job used less memory than it declared: SegResNetDS's 87 M parameters with their gradients and
    # AdamW's two moments (1.4 GB) count in its training's estimate, one fold's weights in its validation's.
    assert {"train", "validate"} <= assert_every_job_used_less_than_it_declared(tmp_path, out, grown)
    # One fold's validation, asked for alone in a run of several planners, is scheduled alone.
    target = f"results/{DEMO}/train/3d_fullres/fold_0/validation"
    assert scheduled_jobs(run_snakemake(tmp_path, "-n", "-f", target, config=grown).stdout) == {"validate": 1}

    # segflow predict with the preset's and the MONAI network's candidates named on the command line (an
    # ensemble of the two).
    images = tmp_path / "resources" / DEMO / "imagesTs"
    predicted = tmp_path / "predicted"
    command = ["predict", "-m", str(out), "-c", "3d_fullres-resenc_m", "3d_fullres-segresnet", "--disable-tta"]
    command += ["--step-size", "1"]  # nnU-Net's -step_size: tiles side by side instead of overlapping by half
    main([*command, "-i", str(images), "-o", str(predicted)])
    for case in ("demo_500", "demo_501", "demo_502"):
        image = sitk.ReadImage(str(images / f"{case}.nii.gz"))
        segmentation = sitk.ReadImage(str(predicted / f"{case}.nii.gz"))
        assert segmentation.GetSize() == image.GetSize()[:3]
        assert set(np.unique(sitk.GetArrayFromImage(segmentation))) <= {0, 1, 2}

    # A third planner: once its plan exists, only its candidates' jobs and those comparing candidates are
    # scheduled (its U-Net and its SegResNet: 2 of each, and 2 x 4 + 1 ensembles), and the budget anew.
    third = {**grown, "planners": "[default,resenc_m,resenc_l]"}
    run_snakemake(tmp_path, f"results/{DEMO}/plans_resenc_l.json", config=third)
    jobs = scheduled_jobs(run_snakemake(tmp_path, "-n", config=third).stdout)
    assert jobs == {
        "network_plans": 1,
        "budget": 1,
        "train": 2,
        "validate": 2,
        "crossval": 2,
        "ensemble": 9,
        "select": 1,
        "report_tables": 1,
        "report_overlays": 1,
        "all": 1,
    }, jobs
