# The dataset and the run's folders, computed once at parse time from the config and the dataset folder. The
# other shared files: candidates.smk (what trains), resources.smk (what jobs declare), targets.smk (what the
# run makes), inputs.smk (what each rule reads and is given).
import dataclasses
import json
from pathlib import Path

from segflow import demo
from segflow.batches import assign_batches
from segflow.dataset import check_labels, discover, images_to_predict, with_labels
from segflow.errors import InputError, stop_workflow
from segflow.layout import Results


def load_dataset(config):
    if config["dataset"] == "demo":
        d = config["demo"]
        dataset = demo.describe(d["path"], d["cases"], d["test_cases"], d["channels"])
    else:
        try:
            dataset = discover(config["dataset"])
        except InputError as err:
            stop_workflow(err)
    if not config["labels"]:
        return dataset
    if dataset.kind != "msd":
        stop_workflow(
            InputError(
                "the config's `labels` apply to MSD tasks only.",
                file=dataset.root / "dataset.json",
                fix="write the labels (and regions_class_order) into this nnU-Net v2 raw folder's dataset.json.",
            )
        )
    labels = with_labels(
        dataset.dataset_json, config["labels"], config["regions_class_order"]
    )
    try:
        check_labels(labels, "the config's labels")
    except InputError as err:
        stop_workflow(err)
    return dataclasses.replace(dataset, dataset_json=labels)


DATASET = load_dataset(config)
# Every path of the results folder (segflow.layout).
RESULTS = Results(f"{config['results']}/{DATASET.name}")
ENV = "../../envs/segflow.yaml"
# Small jobs that open the way to many others (the plans): run before larger jobs that are ready
# too. Snakemake otherwise starts the jobs with the largest inputs first, and a plan of a few milliseconds
# waited for trainings, leaving cores idle at the end of the run.
GATE_PRIORITY = 10
# Per-case stages run one job per batch of cases. On a cluster a batch's conversion, verification and crop
# also share one submission (the group cases_bNNN).
BATCHES = assign_batches(DATASET.cases, config["case_batches"])
# An MSD task is converted into its results folder's raw/; an nnU-Net v2 raw folder is read where it is.
RAW = RESULTS.raw if DATASET.kind == "msd" else str(DATASET.root)
DATASET_JSON = f"{RAW}/dataset.json"
# Cross-validation, selection and prediction need validation folds ("all" validates nothing).
CV_FOLDS = [f for f in config["folds"] if f != "all"]


def load_test_images(config, dataset):
    """Case -> source files of the images to predict (none without cross-validation to select a model)."""
    if not CV_FOLDS or not config["test_images"]:
        return {}
    if config["test_images"] == "auto":
        return dataset.test_sources
    try:
        return images_to_predict(
            config["test_images"], dataset.kind, dataset.dataset_json
        )
    except InputError as err:
        stop_workflow(err)


TEST = load_test_images(config, DATASET)


def test_images_folder():
    """The one folder that holds the test images, which selection.json's reproduce command predicts (None
    where there are none, or they lie in several folders)."""
    folders = {str(Path(files[0]).parent) for files in TEST.values()}
    return folders.pop() if len(folders) == 1 else None


TEST_BATCHES = assign_batches(sorted(TEST), config["case_batches"])


def raw_images(case):
    """A case's channel files: a raw folder's as found (an RGB .png holds three channels in one file), an
    MSD task's as its conversion writes them."""
    if DATASET.kind != "msd":
        return [str(f) for f in DATASET.sources[case]]
    ending = DATASET.file_ending
    return [
        f"{RAW}/imagesTr/{case}_{c:04d}{ending}" for c in range(DATASET.num_channels)
    ]


def test_images(case):
    """The channel files of an image to predict (MSD images are converted into the raw layout first)."""
    if DATASET.kind == "msd":
        ending = DATASET.file_ending
        return [
            f"{RAW}/imagesTs/{case}_{c:04d}{ending}"
            for c in range(DATASET.num_channels)
        ]
    return [str(f) for f in TEST[case]]


def raw_label(case):
    return f"{RAW}/labelsTr/{case}{DATASET.file_ending}"


def raw_files(cases):
    """The raw files of a batch's cases, for the params of jobs that come after their verification."""
    return {
        "images": [raw_images(c) for c in cases],
        "labels": [raw_label(c) for c in cases],
    }


# Folders handed to scripts as params. Functions of the wildcards only: a job asked for directly is in the
# DAG before the plan checkpoint has run, and a params function reading `input` then fails.
def raw_dir(wildcards):
    return RAW


def raw_labels_dir(wildcards):
    return f"{RAW}/labelsTr"


def results_dir(wildcards):
    return RESULTS.root


def case_files(folder, **endings):
    """A batch job's per-case files, as its ``outputs`` param: kind -> FOLDER/{case}ENDING, which the job
    expands for its cases (segflow.batches.per_case) and lists in its manifest.

    Batch jobs declare only their manifest as output. Declared per-case outputs cost Snakemake time for
    every case at every start (a dry-run of 10 000 planned cases took 27-28 s instead of 8-10 s), and nothing
    asks for a per-case file: whole-stage readers take the manifests. The job removes its per-case files
    when it fails, as Snakemake removes a failed job's outputs; the jobs that read them name one deleted
    since (segflow.batches.require_listed_files).
    """
    return {kind: f"{folder}/{{case}}{ending}" for kind, ending in endings.items()}


def batch_manifests(stage):
    """What a job that reads every case of ``stage`` depends on: the manifests of all its batches."""
    return [RESULTS.batch_manifest(stage, b) for b in BATCHES]


def dataset_json_signature():
    """What per-case jobs use from dataset.json; they rerun only when this changes, not when a new
    case changes numTraining (dataset.json itself is an ancient() input)."""
    d = DATASET.dataset_json
    return json.dumps(
        {k: d[k] for k in ("labels", "channel_names", "file_ending")}, sort_keys=True
    )
