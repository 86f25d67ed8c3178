"""The planner against nnU-Net's documented plans, hand-worked values and nnunetv2 2.8.1's own output."""

import json
from pathlib import Path

import numpy as np
import pytest

from segflow.plan import (
    conv_feature_map_size,
    fullres_target_spacing,
    normalization,
    plan_experiment,
    residual_feature_map_size,
    topology,
    transpose_axes,
)
from segflow.plans import PlanConfiguration, preprocessed_configurations, resolved_configuration

DATA = Path(__file__).parent / "data"
LABELS_3 = {"background": 0, "a": 1, "b": 2}


def load_case(name):
    return json.loads((DATA / f"planner_{name}.json").read_text())


def arch(configuration):
    return configuration["architecture"]["arch_kwargs"]


def test_vram_proxy_matches_the_documented_128_cube_example():
    # Method reference §3.5: 128^3, 6 stages, features 32..320, 3 classes -> 452 796 416 activations.
    strides = [[1, 1, 1]] + [[2, 2, 2]] * 5
    features = [32, 64, 128, 256, 320, 320]
    assert conv_feature_map_size([128, 128, 128], strides, features, 3) == 452_796_416


def test_hippocampus_like_fingerprint_gives_the_documented_plans():
    fingerprint = {
        "spacings": [[1.0, 1.0, 1.0]] * 260,
        "shapes_after_crop": [[36, 50, 35]] * 260,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": {}},
    }
    dataset_json = {"channel_names": {"0": "MRI"}, "labels": LABELS_3, "numTraining": 260}
    plans = plan_experiment(fingerprint, dataset_json)
    full, flat = plans["configurations"]["3d_fullres"], plans["configurations"]["2d"]
    assert full["patch_size"] == [40, 56, 40] and full["batch_size"] == 9 and full["spacing"] == [1.0, 1.0, 1.0]
    assert arch(full)["n_stages"] == 4
    assert flat["patch_size"] == [56, 40] and flat["batch_size"] == 366
    assert "3d_lowres" not in plans["configurations"] and full["batch_dice"] is False
    assert full["normalization_schemes"] == ["ZScoreNormalization"] and full["use_mask_for_norm"] == [False]


def test_anisotropic_fingerprint_by_hand():
    case = load_case("anisotropic")
    fp = case["fingerprint"]
    # Median z spacing 3.0 > 3 * 0.75 and 20 * 3 < 256: anisotropic, so the coarse axis takes the 10th
    # percentile of [2.5, 3 x5, 3.5, 4, 4, 5] = 2.5 + 0.9 * 0.5 = 2.95.
    target = fullres_target_spacing(fp["spacings"], fp["shapes_after_crop"])
    assert target.tolist() == pytest.approx([0.75, 0.75, 2.95])
    # The coarse axis is the last one in reader order, so it is moved first.
    assert transpose_axes(target) == ([2, 0, 1], [1, 2, 0])
    plans = plan_experiment(fp, case["dataset_json"])
    full = plans["configurations"]["3d_fullres"]
    # Patch 256^3-volume box clipped to the median [20, 256, 256]; 2.95 / 0.75 >= 2 keeps z unpooled and its
    # kernel 1 in the first stage; from stage 2 on z is within a factor 2 and pools twice, in-plane six times.
    assert full["patch_size"] == [20, 256, 256]
    assert arch(full)["kernel_sizes"][0] == [1, 3, 3] and arch(full)["kernel_sizes"][1] == [3, 3, 3]
    assert arch(full)["strides"] == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 2]]
    # 353 884 160 activations -> round(560e6 / 353884160 * 2) = 3, capped by 5 % of the data (0.5 -> 0), then
    # raised to the minimum batch size 2.
    features = arch(full)["features_per_stage"]
    assert conv_feature_map_size([20, 256, 256], arch(full)["strides"], features, 3) == 353_884_160
    assert full["batch_size"] == 2
    flat = plans["configurations"]["2d"]
    # 2d: 256 x 256, 7 stages, 20 692 992 activations -> 49, capped to 5 % of the data: 655 360 / 65 536 = 10.
    assert flat["patch_size"] == [256, 256] and flat["batch_size"] == 10
    # Relative size 0.6 < 0.75 and z-score: normalise inside the non-zero mask.
    assert full["use_mask_for_norm"] == [True]


PLANNER_CASES = ["anisotropic", "large", "flat2d", "hippocampus"]


@pytest.mark.parametrize("planner", ["default", "resenc_m", "resenc_l", "resenc_xl"])
@pytest.mark.parametrize("name", PLANNER_CASES)
def test_plans_equal_nnunetv2(name, planner):
    """Expected values were produced by nnunetv2 2.8.1's planners on the same fingerprint (hippocampus: its own
    fingerprint of MSD Task04), by tests/nnunetv2_fixture/make_planner_fixture.py."""
    case = load_case(name)
    plans = plan_experiment(case["fingerprint"], case["dataset_json"], planner=planner)
    expected = case["expected"][planner]
    assert plans["plans_name"] == expected["plans_name"]
    assert plans["transpose_forward"] == expected["transpose_forward"]
    assert plans["transpose_backward"] == expected["transpose_backward"]
    assert list(plans["configurations"]) == list(expected["configurations"])
    for config_name, want in expected["configurations"].items():
        got = plans["configurations"][config_name]
        architecture = got.get("architecture", {})
        flat = {**architecture.get("arch_kwargs", {}), **architecture, **got}
        for key, value in want.items():
            actual = flat[key]
            assert actual == pytest.approx(value) if key == "spacing" else actual == value, (config_name, key)


def test_resenc_presets_share_the_default_data_but_not_its_lowres():
    case = load_case("large")
    default = plan_experiment(case["fingerprint"], case["dataset_json"])["configurations"]
    for planner in ("resenc_m", "resenc_l"):
        plans = plan_experiment(case["fingerprint"], case["dataset_json"], planner=planner)
        configs = plans["configurations"]
        for name in ("2d", "3d_fullres"):
            assert configs[name]["data_identifier"] == default[name]["data_identifier"]
            assert configs[name]["spacing"] == default[name]["spacing"]
        assert configs["3d_lowres"]["data_identifier"] == f"{plans['plans_name']}_3d_lowres"
        assert plans["gpu_memory_target_gb"] == {"resenc_m": 8.0, "resenc_l": 24.0}[planner]


def test_residual_vram_proxy_matches_nnunets_documented_example():
    # nnunetv2's ResEnc planner module: ResidualEncoderUNet, 6 stages 32..320, blocks (1, 3, 4, 6, 6, 6), 3 classes,
    # deep supervision on, at 128^3 -> 558 319 104. Ours counts without deep supervision; add the five lower heads.
    strides = [[1, 1, 1]] + [[2, 2, 2]] * 5
    features = [32, 64, 128, 256, 320, 320]
    without = residual_feature_map_size([128] * 3, strides, features, 3, [1, 3, 4, 6, 6, 6])
    lower_heads = sum(3 * (128 // 2**s) ** 3 for s in range(1, 5))
    assert without + lower_heads == 558_319_104


def test_large_dataset_creates_lowres_and_cascade():
    case = load_case("large")
    plans = plan_experiment(case["fingerprint"], case["dataset_json"])
    configs = plans["configurations"]
    low, full = configs["3d_lowres"], configs["3d_fullres"]
    assert configs["3d_cascade_fullres"] == {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    assert low["next_stage"] == "3d_cascade_fullres" and low["batch_dice"] is False and full["batch_dice"] is True
    # The lowres patch covers at least a quarter of its median image; the lowres image has < 1/2 the voxels.
    assert np.prod(low["patch_size"]) / np.prod(low["median_image_size_in_voxels"]) >= 0.25
    assert np.prod(full["median_image_size_in_voxels"]) / np.prod(low["median_image_size_in_voxels"]) >= 2
    assert all(lo > fu for lo, fu in zip(low["spacing"], full["spacing"], strict=True))
    assert full["normalization_schemes"] == ["CTNormalization"] and full["use_mask_for_norm"] == [False]
    assert preprocessed_configurations(plans) == ["2d", "3d_lowres", "3d_fullres"]
    assert resolved_configuration(plans, "3d_cascade_fullres")["patch_size"] == full["patch_size"]


def test_a_plan_configuration_is_the_resolved_configuration_with_the_plans_axes_and_data_folder():
    """segflow.plans.PlanConfiguration, what jobs pass down after reading the plans once: the cascade inherits
    3d_fullres's settings and data, keeps its own previous stage, and carries the plan-wide axis order and CT
    intensities."""
    case = load_case("large")
    plans = plan_experiment(case["fingerprint"], case["dataset_json"])
    plans["transpose_forward"], plans["transpose_backward"] = [2, 0, 1], [1, 2, 0]  # distinguishable
    full, cascade = (PlanConfiguration.of(plans, name) for name in ("3d_fullres", "3d_cascade_fullres"))
    fullres = plans["configurations"]["3d_fullres"]
    assert cascade.settings == {**fullres, "previous_stage": "3d_lowres"} and full.previous_stage is None
    assert cascade.previous_stage == "3d_lowres" and cascade.data_folder == full.data_folder == "3d_fullres"
    assert cascade.patch_size == fullres["patch_size"] and cascade.batch_size == fullres["batch_size"]
    assert cascade.spacing == fullres["spacing"] and all(isinstance(s, float) for s in cascade.spacing)
    assert (cascade.transpose_forward, cascade.transpose_backward) == ((2, 0, 1), (1, 2, 0))
    assert cascade.intensity_properties == plans["foreground_intensity_properties_per_channel"]
    assert cascade.probability_resampling == fullres["resampling_fn_probabilities_kwargs"]
    assert cascade.data_resampling == fullres["resampling_fn_data_kwargs"] != cascade.seg_resampling
    lowres = PlanConfiguration.of(plans, "3d_lowres")
    assert lowres.data_folder == "3d_lowres" and lowres.spacing == plans["configurations"]["3d_lowres"]["spacing"]


def test_2d_dataset_has_only_the_2d_configuration():
    case = load_case("flat2d")
    plans = plan_experiment(case["fingerprint"], case["dataset_json"])
    assert list(plans["configurations"]) == ["2d"]
    assert plans["configurations"]["2d"]["normalization_schemes"] == ["RGBTo01Normalization"]


def test_topology_pads_the_patch_to_the_divisor():
    topo = topology([1.0, 1.0, 1.0], [36, 50, 35])
    assert topo.patch_size == [40, 56, 40] and topo.divisor == [8, 8, 8] and len(topo.strides) == 4


def test_normalization_schemes_follow_channel_names():
    schemes, mask = normalization({"0": "CT", "1": "T2", "2": "noNorm", "3": "zscore"}, median_relative_size=0.5)
    assert schemes == ["CTNormalization", "ZScoreNormalization", "NoNormalization", "ZScoreNormalization"]
    assert mask == [False, True, False, True]
    assert normalization({"0": "T2"}, median_relative_size=0.8)[1] == [False]
