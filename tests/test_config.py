"""The configuration a run gets: nnU-Net's defaults for a user's dataset, the demo's budget for the demo,
command-line values typed as the schema says, errors naming the key; the README's examples run."""

import json
import re
import shlex

import pytest
import yaml
from conftest import (
    REPO,
    blob_case,
    load,
    run_snakemake,
    scheduled_jobs,
    the_one_line,
    write_case,
    write_msd_dataset_json,
    write_raw_dataset,
)
from snakemake.cli import parse_config

from segflow.config import DEMO_BUDGET, merged, resolve
from segflow.errors import InputError

SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
CONFIG_YAML = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def from_command_line(*entries: str, configfile: dict | None = None) -> dict:
    """What the Snakefile resolves: config.yaml, then a --configfile, then --config values exactly as
    Snakemake's own parser hands them over."""
    config = merged(CONFIG_YAML, configfile or {})
    return resolve(merged(config, parse_config(list(entries))), SCHEMA)


def test_a_users_dataset_gets_nnunets_defaults():
    config = from_command_line("dataset=/data/Task04_Hippocampus")
    assert config["folds"] == [0, 1, 2, 3, 4]
    train = config["train"]
    assert (train["epochs"], train["iterations_per_epoch"], train["val_iterations"]) == (1000, 250, 50)
    assert config["inference"]["mirror"] is True and config["configurations"] == "all"


def test_the_demo_keeps_its_tiny_budget_unless_told_otherwise():
    config = from_command_line()
    assert config["dataset"] == "demo" and config["folds"] == [0, 1]
    assert config["train"]["epochs"] == 3 and config["train"]["iterations_per_epoch"] == 10
    assert config["train"]["val_iterations"] == 3 and config["train"]["seed"] == 0
    told = from_command_line("train={epochs: 5}", "folds=[1]")
    assert told["train"]["epochs"] == 5 and told["train"]["iterations_per_epoch"] == 10 and told["folds"] == [1]
    assert DEMO_BUDGET["train"]["epochs"] == 3, "resolving must not change the demo's budget itself"


def test_a_config_file_setting_only_epochs_keeps_the_other_train_keys():
    config = from_command_line("dataset=/data/Prostate", configfile={"train": {"epochs": 50}})
    assert config["train"] == {
        "epochs": 50,
        "iterations_per_epoch": 250,
        "val_iterations": 50,
        "seed": 0,
        "augment_on": "device",
        "threads": 8,
        "mem_mb": "auto",
        "runtime_minutes": 2880,
        "pretrained_weights": None,
    }
    assert config["folds"] == [0, 1, 2, 3, 4]


def test_command_line_values_arrive_typed():
    config = from_command_line(
        "dataset=/data/Task04_Hippocampus",
        "train={epochs: 50, iterations_per_epoch: 100}",
        "folds=[0, 3]",
        "inference={mirror: false, threads: 2}",
        "configurations=[3d_fullres, 2d]",
        "test_images=null",
        "surface_tolerance_mm=2",
    )
    assert config["train"]["epochs"] == 50 and config["train"]["iterations_per_epoch"] == 100
    assert config["folds"] == [0, 3]
    assert config["inference"]["mirror"] is False and config["inference"]["threads"] == 2
    assert config["configurations"] == ["3d_fullres", "2d"]
    assert config["test_images"] is None and config["surface_tolerance_mm"] == 2
    assert from_command_line("dataset=/d", "folds=0")["folds"] == [0]
    assert from_command_line("dataset=/d", "folds=[all]")["folds"] == ["all"]
    assert from_command_line("dataset=/d", "configurations=2d")["configurations"] == ["2d"]


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ("folds=[zero]", "folds[0]"),
        ("train={epochs: -3}", "train.epochs"),
        ("train={epoch: 50}", "train"),
        ("inference={mirror: sometimes}", "inference.mirror"),
        ("configurations=[3d]", "configurations[0]"),
    ],
)
def test_a_refused_value_names_its_key(entry, key):
    with pytest.raises(InputError) as caught:
        from_command_line("dataset=/data/Task04_Hippocampus", entry)
    assert f"config key `{key}`" in str(caught.value) and "--config" in str(caught.value)


def test_a_bad_value_on_the_command_line_stops_snakemake_with_the_key(tmp_path):
    result = run_snakemake(tmp_path, "-n", config={"train": "{epochs: many}"}, check=False)
    assert result.returncode != 0
    assert "config key `train.epochs`" in result.stdout and "Traceback" not in result.stdout


@pytest.mark.parametrize(
    "folds, fold", [("7", 7), ("[0, 9]", 9), ("[all, 5]", 5)], ids=["folds=7", "folds=[0, 9]", "folds=[all, 5]"]
)
def test_folds_the_splits_will_not_have_are_refused_by_the_dry_run(tmp_path, folds, fold):
    result = run_snakemake(tmp_path, "-n", config={"folds": folds}, check=False)
    assert result.returncode != 0
    line = the_one_line(result.stdout)
    assert f"config key `folds`: fold {fold} does not exist" in line and "(0 to 4)" in line and "Fix:" in line


@pytest.mark.slow
def test_a_dataset_too_small_for_five_folds_is_refused_before_any_job_unless_it_trains_fold_all(tmp_path):
    root = tmp_path / "Dataset556_OneCase"
    write_raw_dataset(root, n_cases=1)
    for args in (["-n"], []):
        result = run_snakemake(tmp_path, *args, config={"dataset": str(root)}, check=False)
        assert result.returncode != 0
        line = the_one_line(result.stdout)
        assert f"file {root / 'dataset.json'}" in line and "1 training case cannot be split into 5 folds" in line
        assert "folds='[all]'" in line and "splits file" in line
    assert not (tmp_path / "results").exists()
    dry_run = run_snakemake(tmp_path, "-n", config={"dataset": str(root), "folds": "[all]"})
    assert scheduled_jobs(dry_run.stdout)["splits"] == 1


@pytest.mark.slow
def test_a_fold_past_the_users_splits_file_is_refused_naming_it(tmp_path):
    root = tmp_path / "Dataset557_OwnSplits"
    cases = write_raw_dataset(root, n_cases=4)
    splits = tmp_path / "two_folds.json"
    splits.write_text(json.dumps([{"train": cases[:2], "val": cases[2:]}, {"train": cases[2:], "val": cases[:2]}]))
    config = {"dataset": str(root), "splits": str(splits)}
    result = run_snakemake(tmp_path, "-n", config={**config, "folds": "[0, 2]"}, check=False)
    assert result.returncode != 0
    line = the_one_line(result.stdout)
    assert f"fold 2 does not exist: there are 2 folds (0 to 1) in the splits file {splits}" in line
    assert scheduled_jobs(run_snakemake(tmp_path, "-n", config={**config, "folds": "[0, 1]"}).stdout)["splits"] == 1


def test_after_the_plan_a_dry_run_schedules_five_folds_of_both_configurations(hippocampus, hippocampus_run):
    """MSD Hippocampus given on the command line alone: 2d and 3d_fullres x five folds."""
    workdir = hippocampus_run.parents[1]
    jobs = scheduled_jobs(run_snakemake(workdir, "-n", config={"dataset": str(hippocampus)}).stdout)
    assert jobs["train"] == 10 and jobs["validate"] == 10
    assert "preprocess_b000" not in jobs, "preprocessing is done and unchanged"


def readme_commands() -> list[str]:
    """The README's snakemake command lines that choose a dataset or settings."""
    text = (REPO / "README.md").read_text()
    lines = [
        line.split("  #")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.splitlines()
    ]
    return [line for line in lines if line.startswith("snakemake") and "--config" in line]


def test_every_config_example_of_the_readme_runs(tmp_path, hippocampus):
    """Each README command with --config or --configfile, dry-run on real folders (the SLURM profile's own
    behaviour is tested in test_slurm.py; here only the settings count)."""
    raw = tmp_path / "nnUNet_raw" / "Dataset004_Hip"
    cases = [f"blob_{i:02d}" for i in range(5)]
    for i, case in enumerate(cases):
        write_case(raw, case, *blob_case(i))
    (raw / "dataset.json").write_text(
        '{"channel_names": {"0": "MR"}, "labels": {"background": 0, "outer": 1, "inner": 2}, '
        '"numTraining": 5, "file_ending": ".nii.gz"}'
    )
    (tmp_path / "my_settings.yaml").write_text("train:\n  epochs: 50\n")
    commands = readme_commands()
    assert len(commands) >= 5, commands
    for command in commands:
        command = command.replace("/data/Task04_Hippocampus", str(hippocampus))
        command = command.replace("/data/nnUNet_raw/Dataset004_Hip", str(raw))
        args = [a for a in shlex.split(command)[1:] if a not in ("--profile", "profiles/slurm")]
        args = [str(REPO / a) if a.startswith("config/examples/") else a for a in args]
        args = [str(tmp_path / a) if a == "my_settings.yaml" else a for a in args]
        result = run_snakemake(tmp_path, "-n", *args, check=False)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}"
        assert scheduled_jobs(result.stdout).get("plan") == 1, command


@pytest.mark.slow
def test_a_dataset_of_symbolic_links_is_accepted(tmp_path):
    """An MSD task whose every file is a link into another folder (one copy on shared storage) plans; the stage
    target `plan` also writes the verification's report."""
    store, task = tmp_path / "store", tmp_path / "Task78_Linked"
    cases = [f"blob_{i:02d}" for i in range(5)]
    for i, case in enumerate(cases):
        write_case(store, case, *blob_case(i), layout="msd")
    write_msd_dataset_json(store, cases)
    for source in store.rglob("*"):
        if source.is_file():
            link = task / source.relative_to(store)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
    assert all(p.is_symlink() for p in task.rglob("*") if not p.is_dir())
    run_snakemake(tmp_path / "work", "plan", config={"dataset": str(task)})
    plans = load(tmp_path / "work" / "results" / "Task78_Linked" / "plans.json")
    assert "3d_fullres" in plans["configurations"]
    assert load(tmp_path / "work" / "results" / "Task78_Linked" / "verify_report.json")["warnings"] == []


def test_the_defaults_that_config_yaml_shows_in_its_comments_are_the_schemas():
    """config.yaml leaves the budget out and shows nnU-Net's defaults in a comment: they must be the ones the
    schema gives (it said mem_mb: 16000 where the default had become auto)."""
    text = (REPO / "config" / "config.yaml").read_text()
    block = text.split("a dataset of yours trains with nnU-Net's defaults,\n", 1)[1].split("\n# and the demo", 1)[0]
    shown = yaml.safe_load("\n".join(line.removeprefix("#") for line in block.splitlines()))
    assert set(shown) == {"folds", "train", "inference"}
    for key, value in shown.items():
        described = SCHEMA["properties"][key]
        default = {k: v["default"] for k, v in described["properties"].items()} if "properties" in described else None
        assert value == (default if default is not None else described["default"]), key
