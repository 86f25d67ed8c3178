"""The results folder's paths (segflow.layout) and the run's candidate names (segflow.candidates), without Snakemake."""

import re

import pytest

from segflow import layout
from segflow.candidates import Candidate, candidate_pattern, data_folders, network_plans, parse
from segflow.layout import Results

RESULTS = Results("results/Dataset001_X")


def test_a_rule_pattern_and_the_file_it_stands_for_come_from_one_function():
    pattern = RESULTS.checkpoint("{candidate}", "{fold}")
    assert pattern == "results/Dataset001_X/train/{candidate}/fold_{fold}/checkpoint_final.pt"
    assert pattern.format(candidate="3d_fullres", fold=2) == RESULTS.checkpoint("3d_fullres", 2)
    assert RESULTS.validation("2d", 0) == "results/Dataset001_X/train/2d/fold_0/validation"
    assert RESULTS.progress("2d", "all") == "results/Dataset001_X/train/2d/fold_all/progress.png"


def test_plans_files_name_the_planner_and_the_network_only_where_they_are_not_the_defaults():
    assert RESULTS.plans() == "results/Dataset001_X/plans.json"
    assert RESULTS.plans("resenc_m") == "results/Dataset001_X/plans_resenc_m.json"
    assert RESULTS.plans("resenc_m", "swinunetr") == "results/Dataset001_X/plans_resenc_m_swinunetr.json"
    assert RESULTS.plans(network="segresnet") == "results/Dataset001_X/plans_segresnet.json"
    candidate = parse("3d_fullres-resenc_l-segresnet")
    assert RESULTS.plans(candidate.planner, candidate.network) == f"{RESULTS.root}/{candidate.plans_file}"


def test_a_cross_validation_prediction_lies_in_its_fold_or_in_its_ensemble_folder():
    ensemble = layout.ensemble_name("2d", "3d_fullres")
    assert RESULTS.ensemble("2d", "3d_fullres") == f"{RESULTS.root}/crossval/ensemble__2d__3d_fullres"
    assert (
        RESULTS.cross_validation_file(ensemble, "c7", ".nii.gz", 3) == f"{RESULTS.root}/crossval/{ensemble}/c7.nii.gz"
    )
    assert (
        RESULTS.cross_validation_file("2d", "c7", ".nii.gz", 3)
        == f"{RESULTS.root}/train/2d/fold_3/validation/c7.nii.gz"
    )


def test_targets_of_a_run():
    names = ["2d", "3d_fullres", "3d_lowres"]
    assert layout.ensemble_pairs(names) == [("2d", "3d_fullres"), ("2d", "3d_lowres"), ("3d_fullres", "3d_lowres")]
    training = layout.training_targets(RESULTS, names, [0, 1])
    assert len(training) == 3 * 2 * 2
    assert training[:2] == [RESULTS.checkpoint("2d", 0), RESULTS.progress("2d", 0)]
    assert training[-1] == RESULTS.progress("3d_lowres", 1)
    cv = layout.crossvalidation_targets(RESULTS, names, [0, 1])
    assert cv[:3] == [f"{RESULTS.root}/crossval/{n}/summary.json" for n in names]
    assert cv[3:6] == [RESULTS.ensemble(a, b) for a, b in layout.ensemble_pairs(names)]
    assert cv[-1] == RESULTS.selection
    assert layout.crossvalidation_targets(RESULTS, names, []) == []  # fold "all" alone validates nothing
    assert layout.prediction_targets(RESULTS, ["b", "a"], ".nrrd") == [
        f"{RESULTS.root}/predictions/b.nrrd",
        f"{RESULTS.root}/predictions/a.nrrd",
    ]


@pytest.mark.parametrize(
    ("planners", "networks"),
    [(["default"], ["default"]), (["default", "resenc_m"], ["default", "swinunetr"]), (["resenc_l"], ["segresnet"])],
)
def test_every_candidate_name_of_a_run_matches_its_wildcard_pattern_and_no_other_does(planners, networks):
    pattern = re.compile(candidate_pattern(planners, networks))
    configurations = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
    names = [Candidate(c, p, n).name for c in configurations for p in planners for n in networks]
    assert all(pattern.fullmatch(name) for name in names), names
    assert all(parse(name).name == name for name in names)
    outsiders = ["3d_fullres-resenc_xl", "3d_fullres-default-x", "3d_fullres-swinunetr-resenc_m", "3d", "2d-"]
    outsiders += [Candidate("2d", "resenc_m").name] if "resenc_m" not in planners else []
    outsiders += [Candidate("2d", network="segresnet").name] if "segresnet" not in networks else []
    assert not any(pattern.fullmatch(name) for name in outsiders)


def test_network_plans_and_data_folders_of_a_run():
    assert network_plans(["default", "resenc_m"], ["default", "swinunetr"]) == {
        "swinunetr": ("default", "swinunetr"),
        "resenc_m_swinunetr": ("resenc_m", "swinunetr"),
    }
    assert network_plans(["default"], ["default"]) == {}
    folders = data_folders(["default", "resenc_l"])
    assert folders["3d_fullres"] == Candidate("3d_fullres")
    assert folders["nnUNetResEncUNetLPlans_3d_lowres"] == Candidate("3d_lowres", "resenc_l")
    assert list(data_folders(["default"])) == ["2d", "3d_fullres", "3d_lowres"]
