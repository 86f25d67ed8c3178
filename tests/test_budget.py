"""The budget shown once the plans exist (segflow.budget): its arithmetic on hand-made figures, the probe's
choice of batch sizes on a made-up CPU, and a real probe of a small planned network."""

import pytest

from segflow import budget as budget_module
from segflow.budget import at_batch, cpu_timings, epoch_seconds, make_budget, probe, summary_lines
from segflow.plan import plan_experiment
from segflow.report import budget_rows
from segflow.train.settings import TrainSettings

NNUNET_TRAIN = {"epochs": 1000, "iterations_per_epoch": 250, "val_iterations": 50, "runtime_minutes": 2880}


def test_a_step_at_the_planned_batch_follows_the_line_through_the_two_largest_timed_batches():
    assert at_batch({9: 7.0}, 9) == 7.0
    assert at_batch({2: 3.0}, 6) == pytest.approx(9.0)  # one size: in proportion
    # 1 s fixed + 0.5 s per sample, timed at 4 and 16 (the noisier single sample left out): at 30, 16 s
    assert at_batch({1: 9.9, 4: 3.0, 16: 9.0}, 30) == pytest.approx(16.0)


def test_a_cpu_times_growing_batches_until_the_next_would_take_too_long(monkeypatch):
    sizes = []

    def linear_step(trainer, labels, size, generator):  # 0.1 s fixed + 0.5 s per sample
        sizes.append(size)
        return 0.1 + 0.5 * size

    monkeypatch.setattr(budget_module, "training_seconds", linear_step)
    monkeypatch.setattr(budget_module, "FULL_BATCH_PROBE_S", 10.0)
    timed = cpu_timings(None, {}, 30, None)
    assert sizes == [1, 4, 16]  # 16 took 8.1 s; 30 would take about 15 s
    assert at_batch(timed, 30) == pytest.approx(0.1 + 0.5 * 30)
    sizes.clear()
    timed = cpu_timings(None, {}, 12, None)
    assert sizes == [1, 4, 12]  # the planned batch itself fits: timed, not extrapolated
    assert timed[12] == pytest.approx(0.1 + 0.5 * 12)
    sizes.clear()
    monkeypatch.setattr(budget_module, "FULL_BATCH_PROBE_S", 2.0)  # 4 samples would take 2.1 s: 3 instead
    timed = cpu_timings(None, {}, 9, None)
    assert sizes == [1, 3]
    assert at_batch(timed, 9) == pytest.approx(0.1 + 0.5 * 9)
    sizes.clear()
    monkeypatch.setattr(budget_module, "FULL_BATCH_PROBE_S", 0.5)  # not even 2 fit: 2 all the same
    cpu_timings(None, {}, 9, None)
    assert sizes == [1, 2]


def candidate(name, train_step_s, validation_step_s, **extra):
    entry = {
        "name": name,
        "patch_size": [40, 56, 40],
        "batch_size": 9,
        "timed_batches": [9],
        "device": "cpu",
        "threads": 2,
        "train_mem_mb": 5120,
        "validation_mem_mb": 3072,
        "gpus": 0,
        "train_step_s": train_step_s,
        "validation_step_s": validation_step_s,
        **extra,
    }
    entry["epoch_s"] = epoch_seconds(entry, NNUNET_TRAIN)
    entry["fold_s"] = entry["epoch_s"] * NNUNET_TRAIN["epochs"]
    return entry


def test_the_summary_gives_the_budget_the_jobs_and_the_time_per_epoch_and_fold():
    assert epoch_seconds({"train_step_s": 2.0, "validation_step_s": 0.5}, NNUNET_TRAIN) == 525.0
    jobs = {"train": 10, "validate": 10, "predict": 2, "predict_mem_mb": 4096}
    budget = make_budget(
        "Dataset004",
        [candidate("3d_fullres", 0.1, 0.02), candidate("2d", 0.04, 0.01)],
        NNUNET_TRAIN,
        [0, 1, 2, 3, 4],
        jobs,
    )
    # 250 x 0.1 + 50 x 0.02 = 26 s per epoch, 26 000 s per fold; 2d: 10.5 s, 10 500 s; 5 folds each
    assert budget["training_s"] == pytest.approx(5 * (26_000 + 10_500))
    text = "\n".join(summary_lines(budget))
    assert "2 candidates x 5 folds (0, 1, 2, 3, 4), each 1000 epochs x 250 iterations (+ 50 validation" in text
    assert "3d_fullres: patch 40x56x40, batch 9; training job 5.0 GB, validation job 3.0 GB" in text
    assert "on cpu (2 threads): 0.10 s per iteration, 26 s per epoch, about 7 h 13 min per fold" in text
    assert "jobs: 10 training, 10 validation, 2 prediction (4.0 GB each); training in all about 50 h 41 min" in text
    assert "warning" not in text


def test_the_summary_warns_where_a_fold_would_outlast_the_jobs_runtime_limit():
    jobs = {"train": 5, "validate": 5, "predict": 1, "predict_mem_mb": 1024}
    slow = candidate("3d_fullres", 10.0, 3.0, gpus=1, timed_batches=[1, 4], device="cuda:0 (NVIDIA H100)")
    text = "\n".join(summary_lines(make_budget("Dataset004", [slow], NNUNET_TRAIN, [0, 1, 2, 3, 4], jobs)))
    assert "training job 5.0 GB, 1 GPU" in text
    assert "(timed at batches 1 and 4)" in text
    assert "warning: a fold of 3d_fullres is estimated to take longer than the training jobs' runtime limit" in text
    assert "raise train.runtime_minutes" in text


def test_a_probe_times_the_planned_network_at_its_planned_batch():
    fingerprint = {
        "spacings": [[1.0, 1.0, 1.0]] * 4,
        "shapes_after_crop": [[8, 16, 16]] * 4,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": {}},
    }
    dataset_json = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 4}
    plans = plan_experiment(fingerprint, dataset_json)
    probed = probe(plans, dataset_json, "3d_fullres", TrainSettings(), "cpu")
    assert probed["device"] == "cpu" and probed["batch_size"] == plans["configurations"]["3d_fullres"]["batch_size"]
    assert probed["timed_batches"] == [probed["batch_size"]]  # a small network: the planned batch itself
    assert 0 < probed["validation_step_s"] < probed["train_step_s"]


def test_a_candidate_that_cannot_be_timed_is_reported_and_the_others_still_counted():
    jobs = {"train": 2, "validate": 2, "predict": 0, "predict_mem_mb": 0}
    broken = {**candidate("2d", 0.0, 0.0), "error": "IndexError: boom", "epoch_s": None, "fold_s": None}
    budget = make_budget("Dataset004", [broken, candidate("3d_fullres", 0.1, 0.02)], NNUNET_TRAIN, [0], jobs)
    assert budget["training_s"] == pytest.approx(26_000)
    text = "\n".join(summary_lines(budget))
    assert (
        "2d: patch 40x56x40, batch 9; training job 5.0 GB, validation job 3.0 GB; its training step could not be "
        "timed: IndexError: boom" in text
    )
    assert "jobs: 2 training, 2 validation, 0 prediction; training in all about 7 h 13 min one job at a time" in text


def test_the_report_sets_the_estimate_beside_the_folds_median_epoch_and_names_what_was_not_timed(tmp_path):
    for fold, seconds in ((0, [30.0, 34.0]), (1, [40.0])):  # the median of 30, 34 and 40 is 34
        folder = tmp_path / f"fold_{fold}"
        folder.mkdir()
        (folder / "training_log.jsonl").write_text("".join(f'{{"epoch_seconds": {s}}}\n' for s in seconds))
    broken = {**candidate("2d", 0.0, 0.0), "error": "IndexError: boom", "epoch_s": None, "fold_s": None}
    del broken["threads"], broken["device"], broken["train_step_s"]
    budget = make_budget("D", [candidate("3d_fullres", 0.1, 0.02), broken], NNUNET_TRAIN, [0, 1], {})
    folds = {"3d_fullres": [tmp_path / "fold_0", tmp_path / "fold_1"], "2d": [tmp_path / "fold_1"]}
    timed, untimed = budget_rows(budget, folds)
    assert timed == {
        "candidate": "3d_fullres",
        "probed on": "cpu, 2 threads",
        "s per iteration (probe)": 0.1,
        "s per epoch, estimated": 26.0,
        "s per epoch, measured": 34.0,
        "measured / estimated": round(34 / 26, 2),
    }
    assert untimed["probed on"] == "not timed: IndexError: boom" and untimed["s per epoch, measured"] == 40.0
    assert untimed["s per epoch, estimated"] == untimed["measured / estimated"] == ""


def test_the_budget_job_says_what_it_times_at_least_every_heartbeat(tmp_path, monkeypatch, caplog):
    """A probe that takes longer than the heartbeat (a large network on a CPU) gets lines while it runs."""
    import time

    import segflow.progress

    monkeypatch.setattr(segflow.progress, "HEARTBEAT_S", 0.1)
    monkeypatch.setattr(budget_module, "probe", lambda *args: time.sleep(0.35) or {"error": "slow"})
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0, "a": 1}}')
    (tmp_path / "plans.json").write_text("{}")
    job = {
        "name": "3d_fullres",
        "plans": str(tmp_path / "plans.json"),
        "configuration": "3d_fullres",
        "patch_size": [8, 8, 8],
    }
    job |= {"batch_size": 2, "train_mem_mb": 1024, "validation_mem_mb": 1024, "gpus": 0}
    jobs = {"train": 1, "validate": 1, "predict": 0, "predict_mem_mb": 0}
    with caplog.at_level("INFO", logger="segflow.progress"):
        train = {**NNUNET_TRAIN, "seed": 0, "augment_on": "device"}
        budget_module.estimate_budget("D", tmp_path / "dataset.json", [job], train, [0], jobs, tmp_path / "b.json")
    beats = [r.message for r in caplog.records if r.message.startswith("budget: timing 3d_fullres's training steps, ")]
    assert len(beats) >= 2, [r.message for r in caplog.records]


def test_a_fold_too_short_to_time_is_not_probed_and_says_so(tmp_path, monkeypatch):
    """A run that only tries the chain (1 epoch of 1 iteration and 1 validation iteration: 2 steps a fold) would wait
    on a probe as long as its trainings, and a run of no folds has nothing to time; a fold of 20 steps is timed."""
    probed = []
    monkeypatch.setattr(budget_module, "probe", lambda *args: probed.append(args) or {"error": "probed"})
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0, "a": 1}}')
    (tmp_path / "plans.json").write_text("{}")
    job = {"name": "3d_fullres", "plans": str(tmp_path / "plans.json"), "configuration": "3d_fullres"}
    job |= {"patch_size": [8, 8, 8], "batch_size": 2, "train_mem_mb": 1024, "validation_mem_mb": 1024, "gpus": 0}
    jobs = {"train": 1, "validate": 1, "predict": 0, "predict_mem_mb": 0}
    tiny = {
        **NNUNET_TRAIN,
        "epochs": 1,
        "iterations_per_epoch": 1,
        "val_iterations": 1,
        "seed": 0,
        "augment_on": "device",
    }
    budget = budget_module.estimate_budget("D", tmp_path / "dataset.json", [job], tiny, [0], jobs, tmp_path / "b.json")
    assert not probed and budget["training_s"] == 0
    (entry,) = budget["candidates"]
    assert entry["not_timed"] == "not timed: a fold of 2 steps takes about as long as timing it"
    assert entry["fold_s"] is None and entry["epoch_s"] is None
    assert "3d_fullres: patch 8x8x8, batch 2; training job 1.0 GB, validation job 1.0 GB; not timed: a fold of 2" in (
        "\n".join(summary_lines(budget))
    )
    assert budget_rows(budget, {})[0]["probed on"] == entry["not_timed"]
    twenty = {**tiny, "epochs": 2, "iterations_per_epoch": 9}
    dataset_json, out = tmp_path / "dataset.json", tmp_path / "b.json"
    unfolded = budget_module.estimate_budget("D", dataset_json, [job], twenty, [], jobs, out)
    assert not probed and unfolded["candidates"][0]["not_timed"] == "not timed: the run trains no fold"
    budget_module.estimate_budget("D", dataset_json, [job], twenty, [0], jobs, out)
    assert len(probed) == 1
