"""Every benchmark in bench/ run on a tiny input, segflow's side alone (CI has no nnunetv2): each must still run
to its end and print its figures, so that none rots unnoticed. The figures themselves are not judged here
(speed belongs to the benchmarks); what is checked is that they are there. bench/dry_run.py needs SLURM and
is smoke-tested in test_slurm.py; bench/train_parity.py runs in nnunetv2's Python, so only its segflow side is
checked; the GPU scripts are checked for syntax and for the options they pass."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_snakemake

from segflow import demo

BENCH = REPO / "bench"
TINY_BUDGET = ("--epochs", "1", "--iterations", "2", "--val-iterations", "1")


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory) -> Path:
    """An MSD Task folder of six small single-channel cases and two test images (the demo's generator)."""
    root = tmp_path_factory.mktemp("bench") / "Task950_Tiny"
    demo.generate(root, cases=6, test_cases=2, channels=1)
    return root


def bench(script: str, *args, cwd=None) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *map(str, args)], capture_output=True, text=True, cwd=cwd
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def preprocessed(tiny_task, tmp_path_factory) -> Path:
    """bench/preprocess.py on the tiny task and two small generated volumes; returns segflow's results folder."""
    work = tmp_path_factory.mktemp("preprocess")
    output = bench(
        "preprocess.py",
        "--segflow-only",
        "--hippocampus",
        tiny_task,
        "--work",
        work,
        "--large-cases",
        "2",
        "--large-size",
        "anisotropic",
        "--json",
        work / "figures.json",
    )
    assert re.search(r"segflow \(snakemake --cores 2\):\s+[\d.]+ s\s+peak RSS tree [\d.]+ GB", output), output
    figures = json.loads((work / "figures.json").read_text())
    assert set(figures) == {"hippocampus", "large"} and figures["large"]["segflow"]["wall_s"] > 0
    results = work / "segflow_hippocampus" / "results" / tiny_task.name
    # The preprocessing stage target, not the whole workflow: arrays of both configurations, no training.
    assert len(list((results / "preprocessed" / "3d_fullres").glob("*_seg.npy"))) == 6
    assert not (results / "train").exists()
    # The training benchmarks also need the splits.
    run_snakemake(results.parent.parent, f"results/{tiny_task.name}/splits.json", config={"dataset": str(tiny_task)})
    return results


def test_bench_preprocess(preprocessed):
    assert (preprocessed / "plans.json").is_file()


def test_bench_compare(tiny_task, tmp_path):
    output = bench(
        "compare.py",
        "--segflow-only",
        "--dataset",
        tiny_task,
        "--work",
        tmp_path,
        *TINY_BUDGET,
        "--cases",
        "1",
        "--json",
        tmp_path / "figures.json",
    )
    assert re.search(r"\| training, seconds per iteration \| not run \| [\d.]+ \| n/a \|", output), output
    assert re.search(r"\| prediction, seconds per case \| not run \| [\d.]+ \|", output), output
    assert json.loads((tmp_path / "figures.json").read_text())["nnunetv2"] is None


def test_bench_predict(tiny_task, preprocessed, tmp_path):
    output = bench(
        "predict.py",
        "--segflow-only",
        "--hippocampus",
        tiny_task,
        "--segflow-results",
        preprocessed,
        "--cases",
        "2",
        "--folds",
        "1",
        "--work",
        tmp_path,
        "--json",
        tmp_path / "figures.json",
    )
    assert re.search(r"segflow on cpu: [\d.]+ s per case \(2 cases, whole command\)", output), output
    assert len(list((tmp_path / "out_cpu").glob("*.nii.gz"))) == 2


def test_bench_predict_cli(demo_run, tmp_path):
    """bench/predict_cli.py on a copy of the demo run: one round of the predict job against segflow predict."""
    work = tmp_path / "demo"
    shutil.copytree(demo_run, work, symlinks=True)
    output = bench("predict_cli.py", "--rounds", "1", "--work", work, "--json", tmp_path / "figures.json")
    pattern = r"round 1: predict job [\d.]+ CPU s \(snakemake's own [\d.]+ s left out\), segflow predict [\d.]+ CPU s"
    assert re.search(pattern, output), output
    assert re.search(r"segflow predict / predict job, CPU time: median [\d.]+ over 1 rounds", output), output
    (row,) = json.loads((tmp_path / "figures.json").read_text())["rounds"]
    assert row["job_cpu_s"] > 0 and row["ratio"] == row["command_cpu_s"] / row["job_cpu_s"]
    assert len(list((work / "predictions_cli").glob("*.nii.gz"))) == 3


def test_bench_interop(tiny_task, tmp_path):
    """segflow trains two folds, exports them as an nnU-Net folder and predicts with the export and its results."""
    output = bench(
        "interop.py",
        "--segflow-only",
        "--hippocampus",
        tiny_task,
        *TINY_BUDGET,
        "--train-threads",
        "1",
        "--cases",
        "1",
        "--work",
        tmp_path,
    )
    assert re.search(r"segflow +[\d.]+ s per case \(whole command\)", output), output
    assert re.search(r"identical label maps: 1 of 1 cases; largest probability difference 0\.0+\n", output), output
    exported = tmp_path / "exported" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    assert sorted(p.name for p in exported.glob("fold_*/checkpoint_final.pth")) == ["checkpoint_final.pth"] * 2


def test_bench_train_quality(tiny_task, preprocessed, tmp_path):
    """One seed of each segflow variant at half the width, every run's curves in the JSON; run again with two
    seeds, the JSON's runs are kept, not trained again, and only the second seed trains."""
    record = tmp_path / "quality.json"
    common = ["--segflow-only", "--hippocampus", tiny_task, "--segflow-results", preprocessed, *TINY_BUDGET]
    common += ["--width-divisor", "2", "--augment-on", "device", "workers", "--work", tmp_path, "--json", record]
    output = bench("train_quality.py", *common, "--repeats", "1")
    assert "features / 2" in output, output
    runs = json.loads(record.read_text())["runs"]
    assert sorted(runs) == ["segflow-device/seed_0", "segflow-workers/seed_0"]
    assert all(len(r["train_loss"]) == len(r["pseudo_dice"]) == 1 for r in runs.values())
    plans = json.loads((tmp_path / "plans_width_2.json").read_text())["configurations"]["3d_fullres"]
    planned = json.loads((preprocessed / "plans.json").read_text())["configurations"]["3d_fullres"]
    halves = [f // 2 for f in planned["architecture"]["arch_kwargs"]["features_per_stage"]]
    assert plans["architecture"]["arch_kwargs"]["features_per_stage"] == halves
    output = bench("train_quality.py", *common, "--repeats", "2")
    for variant in ("device", "workers"):
        assert re.search(rf"segflow-{variant}:\s+EMA pseudo Dice [\d.]+ \(runs: [\d.]+, [\d.]+\); median", output), (
            output
        )
    again = json.loads(record.read_text())["runs"]
    assert {k: again[k] for k in runs} == runs and len(again) == 4
    bench("train_quality.py", *common, "--repeats", "3", "--max-runs", "1")  # the next pending run alone
    assert sorted(json.loads(record.read_text())["runs"]) == sorted([*again, "segflow-device/seed_2"])
    table = bench("train_quality.py", "--markdown", "--json", record)  # the README's table, from the record
    rows = [line for line in table.splitlines() if line.startswith("| segflow")]
    assert len(rows) == 10 and rows[0].startswith("| segflow, `augment_on: device` (0), training loss | **"), table
    assert rows[5].startswith("| segflow, device (0), EMA pseudo Dice | | | "), table


def test_bench_train_step(tmp_path):
    """One iteration of segflow's trainer on nnU-Net's ResEnc M plan (batch cut to 2 for time)."""
    output = bench(
        "train_step.py",
        "--segflow-only",
        "--plans",
        "hippocampus",
        "--planner",
        "resenc_m",
        "--batch-size",
        "2",
        "--iterations",
        "1",
        "--warmup",
        "0",
        "--cases",
        "6",
        "--workers",
        "1",
        "--work",
        tmp_path,
        "--json",
        tmp_path / "figures.json",
        "--budget-probe",
    )
    line = r"segflow:\s+[\d.]+ s/iteration \(median of 1\); data loading [\d.]+ CPU s per batch"
    assert re.search(line, output), output
    header = r"hippocampus \(resenc_m planner, ResidualEncoderUNet [\d.]+ M parameters\): patch \[40, 56, 40\] batch 2"
    assert re.search(header, output), output
    # On a CPU the one worker process cut and augmented the batches (its CPU time is seen); the training
    # process augmented none.
    figures = json.loads((tmp_path / "figures.json").read_text())["hippocampus"]["segflow"]
    assert figures["loader_cpu_s_per_batch"] > 0 and figures["device_augmentation_s_per_batch"] is None
    # --budget-probe: segflow.budget's estimate of the same plan's step, beside the measured one
    assert re.search(r"budget probe \(segflow.budget, before a run\): [\d.]+ s per training step on cpu", output)
    assert figures["budget_probe"]["batch_size"] == 2 and figures["budget_probe"]["train_step_s"] > 0


def test_bench_train_step_rounds_take_turns_and_pair_their_ratios(monkeypatch):
    """--rounds: the frameworks alternate which runs first (ABBA), and each round's ratio compares the two runs
    of that round, so a machine slowing down between rounds (here round 2) shifts no ratio."""
    sys.path.insert(0, str(BENCH))
    import train_step

    medians = {"nnunetv2": iter([10.0, 20.0, 10.0]), "segflow": iter([9.0, 19.0, 9.5])}
    order = []

    def worker_run(python, framework, args, work):
        order.append(framework)
        seconds = next(medians[framework])
        figures = {"times": [seconds, seconds + 0.1, seconds - 0.1], "loader_cpu_s_per_batch": 1.0}
        return figures | ({"device_augmentation_s_per_batch": 0.2} if framework == "segflow" else {})

    monkeypatch.setattr(train_step, "run_worker", worker_run)
    args = argparse.Namespace(segflow_only=False, rounds=3, nnunet_python="python3")
    segflow, nnunet, rounds = train_step.timed_rounds(args, Path("unused"))
    assert order == ["nnunetv2", "segflow", "segflow", "nnunetv2", "nnunetv2", "segflow"]
    assert [round(r["ratio"], 3) for r in rounds] == [0.9, 0.95, 0.95]
    assert len(segflow["times"]) == len(nnunet["times"]) == 9
    assert segflow["device_augmentation_s_per_batch"] == 0.2 and "device_augmentation_s_per_batch" not in nnunet


def test_bench_gpu_prepare_packs_what_the_gpu_scripts_unpack(preprocessed, tmp_path):
    """bench/gpu_prepare.py (wheels left out: they come from PyPI) on a checkout: the carried folders are kept
    out of git, the stubs are importable packages, and the archive unpacks as gpu_train_quality.sh unpacks it
    into the results folder that bench/train_quality.py reads."""
    checkout = tmp_path / "checkout"
    (checkout / ".git" / "info").mkdir(parents=True)
    (checkout / ".git" / "info" / "exclude").write_text("# git ls-files --others --exclude-from=.git/info/exclude\n")
    for _ in range(2):  # a second run adds nothing twice
        bench("gpu_prepare.py", "--repo", checkout, "--skip", "wheels", "--segflow-results", preprocessed)
    exclude = (checkout / ".git" / "info" / "exclude").read_text().splitlines()
    assert exclude[1:] == ["/.whl/", "/.stubs/", "/.gpudata/"]
    assert {p.relative_to(checkout).as_posix() for p in (checkout / ".stubs").rglob("*.py")} == {
        ".stubs/SimpleITK/__init__.py",
        ".stubs/imagecodecs/__init__.py",
    }
    archive = checkout / ".gpudata" / "hippocampus_preprocessed.tar.xz"
    assert f".gpudata/{archive.name}" in (BENCH / "gpu_train_quality.sh").read_text()
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "xJf", archive, "-C", unpacked], check=True)
    for part in ("plans.json", "splits.json", "raw/dataset.json"):
        assert (unpacked / part).read_bytes() == (preprocessed / part).read_bytes(), part
    arrays = sorted(p.name for p in (preprocessed / "preprocessed" / "3d_fullres").iterdir())
    assert sorted(p.name for p in (unpacked / "preprocessed" / "3d_fullres").iterdir()) == arrays


def test_bench_memory(tmp_path):
    """bench/memory.py at a tenth of each size: every stage's figures are printed, and the validation export of
    logits made from the preprocessed label map gives back the case's label map (BraTS: no resampling, so voxel
    for voxel; the CT is resampled to 0.8 mm and back, so nearly)."""
    import SimpleITK as sitk

    output = bench("memory.py", "--segflow-only", "--scale", "0.1", "--work", tmp_path, "--json", tmp_path / "m.json")
    for kind in ("brats", "ct"):
        for stage in ("preprocessing", "validation export", "prediction"):
            assert re.search(rf"{kind}\s+{stage}\s+segflow\s+[\d.]+ s\s+peak PSS tree\s+[\d.]+ GB", output), output
    figures = json.loads((tmp_path / "m.json").read_text())
    assert figures["ct"]["prediction"]["segflow"]["peak_pss_gb"] > 0

    def label_map(path):
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))

    for kind, least_dice in (("brats", 1.0), ("ct", 0.9)):
        exported = label_map(tmp_path / kind / "segflow" / "validation.mha")
        truth = label_map(tmp_path / kind / "raw" / "labelsTr" / f"{kind}.mha")
        assert exported.shape == truth.shape
        for label in np.unique(truth)[1:]:
            overlap = (
                2
                * ((exported == label) & (truth == label)).sum()
                / ((exported == label).sum() + (truth == label).sum())
            )
            assert overlap >= least_dice, (kind, label, overlap)
        assert (tmp_path / kind / "segflow" / "predicted" / f"{kind}.mha").is_file()


def test_bench_augment():
    output = bench("augment.py", "--plans", "hippocampus", "--batches", "1")
    assert re.search(r"batchgeneratorsv2 per sample, 1 CPU thread .*: [\d.]+ s per batch", output), output
    assert re.search(r"segflow batched on cpu \(2 torch threads\): +[\d.]+ s per batch", output), output


def test_bench_train_parity_segflow_side():
    """train_parity.py loads nnunetv2's state dict into segflow's network as it is (tests/test_network.py checks
    that the names agree) and steps segflow's loss: those names must exist on segflow's side."""
    from segflow.train import loss

    source = (BENCH / "train_parity.py").read_text()
    assert "network.load_state_dict(trainer.network.state_dict())" in source
    for name in re.findall(r"from segflow\.train\.loss import (.+)", source)[0].split(","):
        assert hasattr(loss, name.strip()), name


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.sh")))
def test_bench_gpu_scripts_parse_and_pass_options_their_benchmarks_take(script):
    subprocess.run(["bash", "-n", str(BENCH / script)], check=True)
    text = (BENCH / script).read_text().replace("\\\n", " ")
    calls = re.findall(r"python3? (bench/\w+\.py)([^\n|;&]*)", text)
    scripts = re.findall(r"bash (bench/\w+\.sh)", text)
    assert calls or scripts, f"{script} runs no benchmark"
    assert all((REPO / called).is_file() for called in scripts), scripts
    for called, arguments in calls:
        options = [a for a in shlex.split(arguments, posix=True) if a.startswith("--")]
        helptext = subprocess.run(
            [sys.executable, str(REPO / called), "--help"], capture_output=True, text=True, check=True
        ).stdout
        for option in options:
            assert option.split("=")[0] in helptext, f"{script}: {called} has no option {option}"


def test_bench_prediction_stages(tmp_path):
    """bench/prediction_stages.py at a tenth of each size: both cases' runs are printed, every stage was timed (a
    renamed function fails the bench), and the stages leave a non-negative rest of the run's whole time."""
    args = ("--segflow-only", "--scale", "0.1", "--work", tmp_path, "--json", tmp_path / "s.json", "--markdown")
    output = bench("prediction_stages.py", *args)
    figures = json.loads((tmp_path / "s.json").read_text())
    for kind in ("brats", "ct"):
        for run in ("segflow stages", "segflow predict"):
            assert re.search(rf"{kind}\s+{run}\s+[\d.]+ s\s+peak PSS\s+[\d.]+ GB", output), output
        stages = figures[kind]["segflow stages"]["stages"]
        assert all(seconds >= 0 for seconds in stages.values()), stages
        assert stages["network"] > 0 and stages["other"] > 0
        assert f"**{kind}**, seconds per stage" in output
        peaks = figures[kind]["segflow stages"]["stage_peak_gb"]
        assert 0 < peaks["reading"] <= peaks["network"], peaks  # the image is held while the network runs


def test_stage_clock_counts_a_stage_without_the_stages_it_calls():
    """The clock's stages are exclusive: an outer stage that sleeps 0.05 s around an inner one of 0.5 s counts
    0.05 s (and its time after the inner one returns), not 0.55 s."""
    sys.path.insert(0, str(BENCH))
    from stage_clock import StageClock

    clock = StageClock()
    inner = clock.timed("inner", lambda: time.sleep(0.5))

    def outer():
        time.sleep(0.025)
        inner()
        time.sleep(0.025)

    clock.timed("outer", outer)()
    assert clock.seconds["inner"] >= 0.5
    assert 0.05 <= clock.seconds["outer"] < 0.5
    assert clock.calls == {"inner": 1, "outer": 1}


def test_stage_clock_takes_each_stages_peak_memory():
    """A stage that holds 200 MB for a while peaks at least 150 MB above the stage that ran before it."""
    sys.path.insert(0, str(BENCH))
    from stage_clock import StageClock

    clock = StageClock(sample_s=0.002)

    def hold():
        held = bytearray(200 * 2**20)  # zero-filled: resident at once
        time.sleep(0.2)
        del held

    clock.timed("small", lambda: time.sleep(0.2))()
    clock.timed("large", hold)()
    assert clock.peak_bytes["large"] > clock.peak_bytes["small"] + 150 * 2**20
