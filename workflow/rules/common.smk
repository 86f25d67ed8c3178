# Shared state of the workflow, computed once at parse time from the config and the dataset folder.
import dataclasses
import functools
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

from snakemake.exceptions import IncompleteCheckpointException

from segflow import demo
from segflow.batches import assign_batches, files_in_manifests, per_case
from segflow.dataset import check_labels, discover, images_to_predict, with_labels
from segflow.device import uses_gpu
from segflow.errors import InputError, stop_workflow
from segflow.io import load_json
from segflow.candidates import Candidate, plans_file
from segflow.candidates import parse as parse_candidate
from segflow.networks import DEFAULT_NETWORK, NETWORKS, with_network
from segflow.plan import DEFAULT_PLANNER, PLANNERS, data_folder, resolved_configuration
from segflow.preprocess import preprocessing_signature
from segflow.resources import (
    held_parameters,
    inference_mem_mb,
    largest_voxels,
    per_case_runtime_minutes,
    preprocessing_mem_mb,
    sample_activations,
    TRAINING_PROCESS_MB,
    training_mem_mb,
    user_mem_mb,
)
from segflow.splits import NUM_FOLDS, check_folds


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
OUT = f"{config['results']}/{DATASET.name}"
LOGS = f"{OUT}/logs"
ENV = "../../envs/segflow.yaml"
# Small jobs that open the way to many others (the plans): run before larger jobs that are ready
# too. Snakemake otherwise starts the jobs with the largest inputs first, and a plan of a few milliseconds
# waited for trainings, leaving cores idle at the end of the run.
GATE_PRIORITY = 10
# Per-case stages run one job per batch of cases. On a cluster a batch's conversion, verification and crop
# also share one submission (the group cases_bNNN).
BATCHES = assign_batches(DATASET.cases, config["case_batches"])
# An MSD task is converted into {OUT}/raw; an nnU-Net v2 raw folder is read where it is.
RAW = f"{OUT}/raw" if DATASET.kind == "msd" else str(DATASET.root)
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
    return OUT


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


def batch_manifest(stage, batch):
    """The file a batch job of ``stage`` writes last: its cases and their files (segflow.batches)."""
    return f"{OUT}/batches/{stage}/{batch}.json"


def batch_manifests(stage):
    """What a job that reads every case of ``stage`` depends on: the manifests of all its batches."""
    return [batch_manifest(stage, b) for b in BATCHES]


def dataset_json_signature():
    """What per-case jobs use from dataset.json; they rerun only when this changes, not when a new
    case changes numTraining (dataset.json itself is an ancient() input)."""
    d = DATASET.dataset_json
    return json.dumps(
        {k: d[k] for k in ("labels", "channel_names", "file_ending")}, sort_keys=True
    )


def average_case_mem_mb(size_mb, n_cases, attempt, factor=40, base=500):
    """Memory for a batch job: cases run one after the other, so a multiple of the average case's file size."""
    return user_mem_mb(int(base + factor * size_mb / max(n_cases, 1)), attempt)


def batch_mem_mb(wildcards, input, attempt):
    """average_case_mem_mb of a batch job whose inputs are its cases' images and labels (summed here: Snakemake's
    input.size_mb costs four times as much per file, at every start)."""
    size_mb = existing_bytes([*input.images, *input.labels]) / 2**20
    return average_case_mem_mb(size_mb, len(input.labels), attempt)


def existing_bytes(files):
    """The size on disk of those of ``files`` that exist."""
    return sum(os.path.getsize(f) for f in files if os.path.exists(f))


def raw_bytes(cases, with_labels):
    """The size of the cases' raw images (and label maps) on disk, those that exist."""
    files = [f for c in cases for f in raw_images(c)]
    files += [raw_label(c) for c in cases] if with_labels else []
    return existing_bytes(files)


def raw_mem_mb(cases, factor=40):
    """average_case_mem_mb of a job whose raw files are not its inputs (it depends on their verification)."""

    def mem_mb(wildcards, attempt):
        size_mb = raw_bytes(cases, with_labels=True) / 2**20
        return average_case_mem_mb(size_mb, len(cases), attempt, factor)

    return mem_mb


def fullres_spacing():
    """The default plan's 3d_fullres (else 2d) target spacing: what every data folder's cases are resampled
    to at most (a 3d_lowres has fewer voxels); None before the plan exists."""
    path = Path(f"{OUT}/plans.json")
    if not path.is_file():
        return None
    plans = read_plans(path)
    name = "3d_fullres" if "3d_fullres" in plans["configurations"] else "2d"
    return resolved_configuration(plans, name)["spacing"]


def case_voxels(record, target_spacing):
    """A verified case's voxels, or its resampled voxels if more (segflow.resources.largest_voxels)."""
    if target_spacing is None or len(target_spacing) != len(record["shape"]):
        return math.prod(record["shape"])
    return largest_voxels(record["shape"], record["spacing"], target_spacing)


def verified_cases(input):
    """The verification records of a batch job's cases (its verify manifest's), or None before it has run; read
    once per version of the manifest (its memory and its runtime both ask)."""
    if not os.path.exists(input.verified):
        return None
    return verified_cases_as_of(input.verified, os.stat(input.verified).st_mtime_ns)


@functools.cache
def verified_cases_as_of(manifest, mtime_ns):
    # A record deleted since the verification: the batch is sized as if unverified, and its readers name it.
    try:
        return [load_json(r) for r in files_in_manifests([manifest], "records")]
    except FileNotFoundError:
        return None


def preprocessing_mem(cases):
    """A preprocessing job's memory, from its batch's largest case as verified (its raw files' size until
    the verification has run)."""
    fallback = raw_mem_mb(cases, factor=60)

    def mem_mb(wildcards, input, attempt):
        records = verified_cases(input)
        if records is None:
            return fallback(wildcards, attempt)
        spacing = fullres_spacing()
        voxels = max(case_voxels(record, spacing) for record in records)
        return preprocessing_mem_mb(voxels, DATASET.num_channels, attempt)

    return mem_mb


def per_case_runtime(cases, resampled=True):
    """A crop or preprocessing job's wall-time limit, from its cases' verified voxels (resampled ones where
    ``resampled`` and more), every channel counted; before the verification, twice its raw files' bytes.
    """

    def runtime(wildcards, input, attempt):
        records = verified_cases(input)
        if records is None:
            voxels = 2 * raw_bytes(cases, with_labels=False)
        else:
            spacing = fullres_spacing() if resampled else None
            voxels = DATASET.num_channels * sum(
                case_voxels(r, spacing) for r in records
            )
        return per_case_runtime_minutes(voxels, attempt)

    return runtime


def num_outputs():
    """The network's output channels: labels (with background) or regions."""
    return len(DATASET.dataset_json["labels"])


def training_mem(wildcards, attempt):
    """What a training job declares: the config's train.mem_mb, or the estimate from its plans."""
    setting = config["train"]["mem_mb"]
    if setting != "auto":
        return user_mem_mb(setting, attempt)
    return training_mem_mb(
        candidate_configuration(parse_candidate(wildcards.candidate)),
        num_outputs(),
        config["train"]["threads"],
        on_gpu=bool(gpus(wildcards)),
        attempt=attempt,
        in_channels=DATASET.num_channels,
    )


def inference_mem(wildcards, attempt):
    """What a validation or prediction job declares: the config's inference.mem_mb, or the estimate from the
    dataset's largest case (verify_report.json, an input of theirs)."""
    setting = config["inference"]["mem_mb"]
    if setting != "auto":
        return user_mem_mb(setting, attempt)
    verified = Path(f"{OUT}/verify_report.json")
    largest = load_json(verified).get("largest_case") if verified.is_file() else None
    voxels = case_voxels(largest, fullres_spacing()) if largest else 0
    return inference_mem_mb(
        voxels,
        DATASET.num_channels,
        num_outputs(),
        on_gpu=bool(gpus(wildcards)),
        tile_activations=tile_activations(wildcards),
        with_probabilities=keeps_probabilities(wildcards),
        attempt=attempt,
        held_parameters=inference_parameters(wildcards),
        streamed=bool(gpus(wildcards)),  # cases overlap on a GPU (segflow.stream)
    )


def inference_candidates(wildcards):
    """The candidates whose network a validation (its own) or a prediction (any of the run's) may run."""
    name = getattr(wildcards, "candidate", None)
    return [parse_candidate(name)] if name else selected_candidates()


def tile_activations(wildcards):
    """The convolution outputs of a tile of the largest network the job may run."""
    return max(
        sample_activations(candidate_configuration(c), num_outputs())
        for c in inference_candidates(wildcards)
    )


def inference_parameters(wildcards):
    """The parameters a validation (its fold's weights) or a prediction holds: for the latter, the largest
    selection it may get, the two largest candidates (an ensemble) with all folds and their previous stages.
    """
    validation = hasattr(wildcards, "candidate")
    folds = 1 if validation else len(CV_FOLDS)
    held = sorted(
        held_parameters(
            [candidate_configuration(s) for s in with_previous_stage(c)],
            folds,
            DATASET.num_channels,
            num_outputs(),
        )
        for c in inference_candidates(wildcards)
    )
    return held[-1] if validation else sum(held[-2:])


def with_previous_stage(candidate):
    """A candidate, and the candidate of its previous stage where it is a cascade's."""
    previous = candidate.previous_stage(candidate_plans(candidate))
    return [candidate, previous] if previous else [candidate]


def gpus(wildcards):
    """GPUs a training, validation or prediction job asks for: one when it will use one (device cuda, or
    auto on a machine with an NVIDIA driver, or auto on a cluster, whose submit host has no GPU but whose
    GPU partition has). A function, because the executor is known only once the jobs are scheduled.
    """
    on_cluster = workflow.non_local_exec or workflow.remote_exec
    device = config["device"]
    return int(uses_gpu(device) or (on_cluster and device != "cpu"))


# Planners and networks whose candidates train (config `planners` and `networks`, segflow/candidates.py).
# The default planner always plans: plans.json is the dataset's reference plan, and its 2d and 3d_fullres
# data are every planner's. Every network trains on every planner's plans.
PLANNER_NAMES = config["planners"]
PRESETS = [p for p in PLANNER_NAMES if p != DEFAULT_PLANNER]
NETWORK_NAMES = config["networks"]
OTHER_NETWORKS = [n for n in NETWORK_NAMES if n != DEFAULT_NETWORK]
# Candidate names a rule's {candidate} wildcard may take: a configuration, then `-<planner>` for a preset
# and `-<network>` for a network other than the planner's own.
CONFIGURATION_PATTERN = "2d|3d_fullres|3d_lowres|3d_cascade_fullres"
CANDIDATE_PATTERN = (
    f"({CONFIGURATION_PATTERN})"
    + (f"(-({'|'.join(PRESETS)}))?" if PRESETS else "")
    + (f"(-({'|'.join(OTHER_NETWORKS)}))?" if OTHER_NETWORKS else "")
)
# Plans files of a planner with another network: file stem (plans_<stem>.json) -> (planner, network).
NETWORK_PLANS = {
    plans_file(p, n)[len("plans_") : -len(".json")]: (p, n)
    for p in PLANNER_NAMES
    for n in OTHER_NETWORKS
}
# Preprocessed data folders and the candidate whose plans make each: the default planner's data keep the
# configuration's name; a preset's own data (its 3d_lowres) are named by nnU-Net's data identifier.
DATA_FOLDERS = {c: Candidate(c) for c in ("2d", "3d_fullres", "3d_lowres")}
DATA_FOLDERS.update(
    {f"{PLANNERS[p].plans_name}_3d_lowres": Candidate("3d_lowres", p) for p in PRESETS}
)
DATA_FOLDER_PATTERN = "|".join(DATA_FOLDERS)


def plans_json(planner=DEFAULT_PLANNER):
    """A planner's plans once its checkpoint has run (raises until then, which defers the dependent jobs)."""
    if workflow.remote_exec:
        # A cluster job was submitted after the plan ran, but its own one-job DAG never sees the plan
        # job finish, so the checkpoint would stay "incomplete" there.
        return f"{OUT}/{plans_file(planner)}"
    if planner == DEFAULT_PLANNER:
        return checkpoints.plan.get().output.plans
    return checkpoints.plan_preset.get(planner=planner).output.plans


@functools.cache
def plans_as_of(path, mtime_ns):
    return load_json(path)


def read_plans(path):
    """A plans file, read once per version (input functions ask for plans thousands of times per DAG).
    Shared between callers: read, never change it."""
    return plans_as_of(str(path), os.stat(path).st_mtime_ns)


@functools.cache
def network_plans_as_of(path, mtime_ns, network):
    return with_network(plans_as_of(path, mtime_ns), network)


def candidate_plans(candidate):
    """A candidate's plans: its planner's, with its network in place (the file rule network_plans writes); made
    once per version of the planner's plans (a network other than the planner's own is a deep copy, and job
    resources ask for it per job). Shared between callers, like read_plans's."""
    path = plans_json(candidate.planner)
    return network_plans_as_of(str(path), os.stat(path).st_mtime_ns, candidate.network)


def candidate_configuration(candidate):
    """A candidate's resolved plans configuration."""
    return resolved_configuration(candidate_plans(candidate), candidate.configuration)


def candidate_plans_path(candidate):
    if candidate.network == DEFAULT_NETWORK:
        return plans_json(candidate.planner)
    return f"{OUT}/{candidate.plans_file}"


STAGE_TARGETS_HINT = "nothing can be made for it. Stage targets: preprocessing, training, crossvalidation, prediction."


def selected_configurations(plans):
    wanted = config["configurations"]
    if wanted == "all":
        return list(plans["configurations"])
    require_planned(plans, wanted, "change `configurations` in the config.")
    return wanted


def selected_candidates():
    """Every candidate of the run: each configured planner's selected configurations with each configured
    network, in config order."""
    return [
        Candidate(c, planner, network)
        for planner in PLANNER_NAMES
        for network in NETWORK_NAMES
        for c in selected_configurations(read_plans(plans_json(planner)))
    ]


def candidate_names():
    return [c.name for c in selected_candidates()]


def data_folder_of(candidate):
    return data_folder(candidate_plans(candidate), candidate.configuration)


def preprocessed_data(folder):
    """Every case of a preprocessed data folder, as its batches' manifests."""
    return batch_manifests(f"preprocessed/{folder}")


def preprocessed_targets():
    folders = dict.fromkeys(data_folder_of(c) for c in selected_candidates())
    return [f for folder in folders for f in preprocessed_data(folder)]


STATIC_TARGETS = (
    [
        f"{OUT}/verify_report.json",
        f"{OUT}/fingerprint.json",
        f"{OUT}/plans.json",
        f"{OUT}/budget.json",
        f"{OUT}/splits.json",
    ]
    + [f"{OUT}/{plans_file(p)}" for p in PRESETS]
    + [f"{OUT}/plans_{stem}.json" for stem in NETWORK_PLANS]
)


def previous_stage_dirs(candidate):
    """A cascade trains on the cross-validation predictions of all five folds of its previous stage."""
    previous = candidate.previous_stage(candidate_plans(candidate))
    if not previous:
        return []
    return [
        f"{OUT}/train/{previous.name}/fold_{f}/validation" for f in range(NUM_FOLDS)
    ]


def next_stage(candidate):
    """The cascade a candidate's validation feeds, when that cascade is trained."""
    plans = candidate_plans(candidate)
    following = plans["configurations"][candidate.configuration].get("next_stage")
    if not following:
        return None
    following = candidate.with_configuration(following)
    return following if following in selected_candidates() else None


def training_targets():
    return [
        f"{OUT}/train/{c}/fold_{f}/{name}"
        for c in candidate_names()
        for f in config["folds"]
        for name in ("checkpoint_final.pt", "progress.png")
    ]


def validation_dirs(name):
    return [f"{OUT}/train/{name}/fold_{f}/validation" for f in CV_FOLDS]


def ensemble_pairs():
    names = candidate_names()
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def ensemble_dirs():
    return [f"{OUT}/crossval/ensemble__{a}__{b}" for a, b in ensemble_pairs()]


def crossvalidation_targets():
    """Cross-validation of each trained candidate and ensemble, and the selection."""
    if not CV_FOLDS:
        return []
    targets = [f"{OUT}/crossval/{c}/summary.json" for c in candidate_names()]
    return targets + ensemble_dirs() + [f"{OUT}/selection.json"]


def prediction_targets():
    return [f"{OUT}/predictions/{case}{DATASET.file_ending}" for case in TEST]


def evaluation_targets():
    """Cross-validation, the selection and the test predictions."""
    return crossvalidation_targets() + prediction_targets()


# The test images the report shows (the first few, sorted).
OVERLAY_TEST_CASES = sorted(TEST)[:3]


def report_targets():
    """The report's tables and overlays: the outputs of the rules in report.smk."""
    if not CV_FOLDS:
        return []
    reports = (rules.report_tables, rules.report_overlays)
    return [str(f) for rule in reports for f in rule.output]


def report_table_inputs(wildcards):
    return {
        "dataset_json": DATASET_JSON,
        "fingerprint": f"{OUT}/fingerprint.json",
        "verify_report": f"{OUT}/verify_report.json",
        "plans": [plans_json(p) for p in PLANNER_NAMES]
        + [f"{OUT}/plans_{stem}.json" for stem in NETWORK_PLANS],
        "summaries": [f"{OUT}/crossval/{c}/summary.json" for c in candidate_names()],
        "ensembles": ensemble_dirs(),
        "selection": f"{OUT}/selection.json",
        "budget": f"{OUT}/budget.json",
    }


def report_fold_dirs(wildcards):
    """Each candidate's fold folders, whose training logs the budget table reads."""
    return {
        c: [f"{OUT}/train/{c}/fold_{f}" for f in config["folds"]]
        for c in candidate_names()
    }


def report_overlay_inputs(wildcards):
    """The selected model's validation predictions (any candidate or ensemble may be the one) and the first
    test images with their predictions. (The raw cases the validation overlays show are inputs of the
    preprocessing that validation depends on.)"""
    return {
        "selection": f"{OUT}/selection.json",
        "splits": f"{OUT}/splits.json",
        "validation": [d for c in candidate_names() for d in validation_dirs(c)]
        + ensemble_dirs(),
        "test_images": [f for c in OVERLAY_TEST_CASES for f in test_images(c)],
        "test_predictions": [
            f"{OUT}/predictions/{c}{DATASET.file_ending}" for c in OVERLAY_TEST_CASES
        ],
    }


def planned_targets(wildcards):
    """Targets that exist only once the plans say which configurations there are."""
    return (
        preprocessed_targets()
        + training_targets()
        + evaluation_targets()
        + report_targets()
    )


def require_planned(plans, configurations, fix=STAGE_TARGETS_HINT):
    """Stop with a message, not a KeyError, when the config or a requested job (by a rule name that
    `snakemake --list-rules` shows, or by a file path) names configurations the plan lacks.
    """
    available = list(plans["configurations"])
    missing = [c for c in configurations if c not in available]
    if missing:
        stop_workflow(
            f"the plan {plans['plans_name']} for {DATASET.name} has no configuration "
            f"{', '.join(missing)} (it has {available}); {fix}",
            "not planned",
        )


def preprocessing_plans(wildcards):
    """The plans that make a preprocessing job's data folder, once they have its configuration."""
    candidate = DATA_FOLDERS[wildcards.folder]
    path = plans_json(candidate.planner)
    require_planned(read_plans(path), [candidate.configuration])
    return ancient(path)


def preprocessed_case_files(wildcards):
    """A preprocessing job's per-case files in its data folder (case_files)."""
    folder = f"{OUT}/preprocessed/{wildcards.folder}"
    return case_files(folder, data=".npy", seg="_seg.npy", properties=".json")


def preprocessing_configuration(wildcards):
    return DATA_FOLDERS[wildcards.folder].configuration


def preprocessing_params(wildcards):
    """The settings that make a preprocessing job's data folder: a change reruns every case."""
    # plans_json(), not input.plans: a job asked for directly is in the DAG before the plan checkpoint
    # is known to be complete, and this then defers it instead of failing.
    candidate = DATA_FOLDERS[wildcards.folder]
    settings = preprocessing_signature(
        candidate_plans(candidate), candidate.configuration
    )
    return json.dumps({**settings, "dataset": dataset_json_signature()}, sort_keys=True)


def fold_inputs(candidate):
    """What a training or validation job of ``candidate`` reads (its plans must have it)."""
    plans = candidate_plans(candidate)
    require_planned(plans, [candidate.configuration])
    return {
        "plans": ancient(candidate_plans_path(candidate)),
        "dataset_json": ancient(DATASET_JSON),
        "splits": f"{OUT}/splits.json",
        "data": preprocessed_data(data_folder(plans, candidate.configuration)),
        "previous_stage": previous_stage_dirs(candidate),
    }


def training_inputs(wildcards):
    inputs = fold_inputs(parse_candidate(wildcards.candidate))
    if config["train"]["pretrained_weights"]:
        inputs["pretrained"] = config["train"]["pretrained_weights"]
    return inputs


def configuration_of(wildcards):
    """The configuration, within its plans, that a job's candidate trains."""
    return parse_candidate(wildcards.candidate).configuration


def training_params(wildcards):
    """Everything that decides the trained weights; a change reruns training (plans.json is ancient())."""
    candidate = parse_candidate(wildcards.candidate)
    plans = candidate_plans(candidate)
    return json.dumps(
        {
            "configuration": resolved_configuration(plans, candidate.configuration),
            "labels": DATASET.dataset_json["labels"],
            "train": config["train"],
        },
        sort_keys=True,
    )


def validation_inputs(wildcards):
    candidate = parse_candidate(wildcards.candidate)
    following = next_stage(candidate)
    # The raw labels it evaluates against are inputs of the preprocessing its data comes from.
    return {
        **fold_inputs(candidate),
        "checkpoint": f"{OUT}/train/{wildcards.candidate}/fold_{wildcards.fold}/checkpoint_final.pt",
        "verify_report": ancient(f"{OUT}/verify_report.json"),
        "next_stage_grid": (
            preprocessed_data(data_folder_of(following)) if following else []
        ),
    }


def next_stage_param(wildcards):
    following = next_stage(parse_candidate(wildcards.candidate))
    return following.configuration if following else None


def keeps_probabilities(wildcards):
    """Validation keeps probabilities only where ensembles will need them: where the run has more than one
    candidate. Several planners or networks make several; for one of each, the planner's configurations tell
    (its plans are a validation's input: another planner's are not, and a DAG that targets the validation alone
    has not run their checkpoint)."""
    return len(PLANNER_NAMES) * len(NETWORK_NAMES) > 1 or len(selected_candidates()) > 1


def selection_inputs(wildcards):
    names = candidate_names()
    return {
        "summaries": [f"{OUT}/crossval/{c}/summary.json" for c in names],
        "ensembles": ensemble_dirs(),
        "validation": [d for c in names for d in validation_dirs(c)],
        "dataset_json": DATASET_JSON,
    }


def selection_params(wildcards):
    names = candidate_names()
    return {
        "configurations": names,
        "pairs": ensemble_pairs(),
        "validation": {c: validation_dirs(c) for c in names},
    }


def prediction_plans(wildcards):
    paths = dict.fromkeys(candidate_plans_path(c) for c in selected_candidates())
    return [ancient(p) for p in paths]


def prediction_checkpoints(wildcards):
    """Every trained fold model: which of them the selection uses is decided by selection.json."""
    names = {s.name for c in selected_candidates() for s in with_previous_stage(c)}
    return [
        f"{OUT}/train/{c}/fold_{f}/checkpoint_final.pt"
        for c in sorted(names)
        for f in CV_FOLDS
    ]


# The budget (budget.smk, segflow.budget): every candidate's jobs and what each declares on its first attempt.


def budget_inputs(wildcards):
    """The plans and dataset.json, ancient: rewritten after a case was added, they change nothing the budget
    says unless its params (each candidate's patch, batch and memory) change, which reruns it.
    """
    paths = dict.fromkeys(str(candidate_plans_path(c)) for c in selected_candidates())
    return {
        "plans": [ancient(p) for p in paths],
        "dataset_json": ancient(DATASET_JSON),
        "verify_report": ancient(f"{OUT}/verify_report.json"),
    }


def budget_candidates(wildcards):
    """Each candidate's plans, and the memory and GPUs its training and validation jobs declare."""
    entries = []
    for candidate in selected_candidates():
        jobs = SimpleNamespace(candidate=candidate.name)
        configuration = candidate_configuration(candidate)
        entries.append(
            {
                "name": candidate.name,
                "plans": str(candidate_plans_path(candidate)),
                "configuration": candidate.configuration,
                "patch_size": configuration["patch_size"],
                "batch_size": configuration["batch_size"],
                "train_mem_mb": training_mem(jobs, 1),
                "validation_mem_mb": inference_mem(jobs, 1),
                "gpus": gpus(jobs),
            }
        )
    return entries


def budget_jobs(wildcards):
    """How many training, validation and prediction jobs the run has, and what a prediction job declares."""
    candidates = len(selected_candidates())
    return {
        "train": candidates * len(config["folds"]),
        "validate": candidates * len(CV_FOLDS),
        "predict": len(TEST_BATCHES) if CV_FOLDS else 0,
        "predict_mem_mb": (
            inference_mem(SimpleNamespace(), 1) if TEST and CV_FOLDS else 0
        ),
    }


def once_planned(fallback):
    """A resource function of a job that exists before the plan (its inputs are the plans): ``fallback`` until
    the plan checkpoint has run (a dry-run shows the job then), its own figure once it has.
    """

    def wrap(function):
        @functools.wraps(function)
        def resource(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except IncompleteCheckpointException:
                return fallback

        return resource

    return wrap


@once_planned(fallback=TRAINING_PROCESS_MB)
def budget_mem(wildcards, attempt):
    """The probe holds one candidate's network and a batch at a time: the largest training job's memory."""
    return max(
        training_mem(SimpleNamespace(candidate=c.name), attempt)
        for c in selected_candidates()
    )


@once_planned(fallback=10)
def budget_runtime(wildcards):
    """Minutes: a few steps per candidate (``segflow.budget.FULL_BATCH_PROBE_S`` bounds each on a CPU)."""
    return 10 * len(selected_candidates())
