# Shared state of the workflow, computed once at parse time from the config and the dataset folder.
import dataclasses
import json
from pathlib import Path

from segflow import demo
from segflow.batches import assign_batches
from segflow.dataset import check_labels, discover, images_to_predict, with_labels
from segflow.device import uses_gpu
from segflow.errors import InputError
from segflow.io import load_json
from segflow.plan import data_configuration, resolved_configuration
from segflow.preprocess import preprocessing_signature
from segflow.splits import NUM_FOLDS


def load_dataset(config):
    if config["dataset"] == "demo":
        d = config["demo"]
        dataset = demo.describe(d["path"], d["cases"], d["test_cases"], d["channels"])
    else:
        try:
            dataset = discover(config["dataset"])
        except InputError as err:
            raise WorkflowError(f"segflow: bad input: {err}") from None
    if not config["labels"]:
        return dataset
    if dataset.kind != "msd":
        raise WorkflowError(
            "segflow: the config's `labels` apply to MSD tasks only; for an nnU-Net v2 raw folder "
            f"write the labels (and regions_class_order) into {dataset.root / 'dataset.json'}."
        )
    labels = with_labels(
        dataset.dataset_json, config["labels"], config["regions_class_order"]
    )
    try:
        check_labels(labels, "the config's labels")
    except InputError as err:
        raise WorkflowError(f"segflow: bad input: {err}") from None
    return dataclasses.replace(dataset, dataset_json=labels)


DATASET = load_dataset(config)
OUT = f"{config['results']}/{DATASET.name}"
LOGS = f"{OUT}/logs"
ENV = "../../envs/segflow.yaml"
# Per-case stages run one job per batch of cases. On a cluster a batch's conversion, verification and crop
# also share one submission (the group cases_bNNN).
BATCHES = assign_batches(DATASET.cases, config["case_batches"])
# An MSD task is converted into {OUT}/raw; an nnU-Net v2 raw folder is read where it is.
RAW = f"{OUT}/raw" if DATASET.kind == "msd" else str(DATASET.root)
DATASET_JSON = f"{RAW}/dataset.json"
# Configurations with data of their own (3d_cascade_fullres trains on 3d_fullres's).
DATA_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")
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
        raise WorkflowError(f"segflow: bad input: {err}") from None


TEST = load_test_images(config, DATASET)
TEST_BATCHES = assign_batches(sorted(TEST), config["case_batches"])


def raw_images(case):
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


# Folders handed to scripts as params. Functions of the wildcards only: a job asked for directly is in the
# DAG before the plan checkpoint has run, and a params function reading `input` then fails.
def raw_dir(wildcards):
    return RAW


def raw_labels_dir(wildcards):
    return f"{RAW}/labelsTr"


def results_dir(wildcards):
    return OUT


def per_case(pattern, cases):
    return [pattern.format(case=c) for c in cases]


def dataset_json_signature():
    """What per-case jobs use from dataset.json; they rerun only when this changes, not when a new
    case changes numTraining (dataset.json itself is an ancient() input)."""
    d = DATASET.dataset_json
    return json.dumps(
        {k: d[k] for k in ("labels", "channel_names", "file_ending")}, sort_keys=True
    )


def batch_mem_mb(wildcards, input, factor=40, base=500):
    """Memory for a batch job: cases run one after the other, so a multiple of the average case's size."""
    cases = len(getattr(input, "labels", [])) or 1
    return int(base + factor * input.size_mb / cases)


def gpus(wildcards):
    """GPUs a training, validation or prediction job asks for: one when it will use one (device cuda, or
    auto on a machine with an NVIDIA driver, or auto on a cluster, whose submit host has no GPU but whose
    GPU partition has). A function, because the executor is known only once the jobs are scheduled.
    """
    on_cluster = workflow.non_local_exec or workflow.remote_exec
    device = config["device"]
    return int(uses_gpu(device) or (on_cluster and device != "cpu"))


def plans_json():
    """plans.json once the plan checkpoint has run (raises until then, which defers the dependent jobs)."""
    if workflow.remote_exec:
        # A cluster job was submitted after the plan ran, but its own one-job DAG never sees the plan
        # job finish, so the checkpoint would stay "incomplete" there.
        return f"{OUT}/plans.json"
    return checkpoints.plan.get().output.plans


STAGE_TARGETS_HINT = "nothing can be made for it. Stage targets: preprocessing, training, crossvalidation, prediction."


def selected_configurations(plans):
    wanted = config["configurations"]
    if wanted == "all":
        return list(plans["configurations"])
    require_planned(plans, wanted, "change `configurations` in the config.")
    return wanted


def preprocessed_targets(plans):
    targets = []
    for name in dict.fromkeys(
        data_configuration(plans, c) for c in selected_configurations(plans)
    ):
        for case in DATASET.cases:
            base = f"{OUT}/preprocessed/{name}/{case}"
            targets += [f"{base}.npy", f"{base}_seg.npy", f"{base}.json"]
    return targets


STATIC_TARGETS = [
    f"{OUT}/verify_report.json",
    f"{OUT}/fingerprint.json",
    f"{OUT}/plans.json",
    f"{OUT}/splits.json",
]


def previous_stage_dirs(plans, configuration):
    """A cascade trains on the cross-validation predictions of all five folds of its previous stage."""
    previous = resolved_configuration(plans, configuration).get("previous_stage")
    if not previous:
        return []
    return [f"{OUT}/train/{previous}/fold_{f}/validation" for f in range(NUM_FOLDS)]


def next_stage(plans, configuration):
    """The cascade a configuration's validation feeds, when that cascade is trained."""
    following = plans["configurations"][configuration].get("next_stage")
    return following if following in selected_configurations(plans) else None


def training_targets(plans):
    return [
        f"{OUT}/train/{c}/fold_{f}/{name}"
        for c in selected_configurations(plans)
        for f in config["folds"]
        for name in ("checkpoint_final.pt", "progress.png")
    ]


def validation_dirs(configuration):
    return [f"{OUT}/train/{configuration}/fold_{f}/validation" for f in CV_FOLDS]


def ensemble_pairs(plans):
    configurations = selected_configurations(plans)
    return [
        (a, b) for i, a in enumerate(configurations) for b in configurations[i + 1 :]
    ]


def ensemble_dirs(plans):
    return [f"{OUT}/crossval/ensemble__{a}__{b}" for a, b in ensemble_pairs(plans)]


def crossvalidation_targets(plans):
    """Cross-validation of each trained configuration and ensemble, and the selection."""
    if not CV_FOLDS:
        return []
    targets = [
        f"{OUT}/crossval/{c}/summary.json" for c in selected_configurations(plans)
    ]
    return targets + ensemble_dirs(plans) + [f"{OUT}/selection.json"]


def prediction_targets():
    return [f"{OUT}/predictions/{case}{DATASET.file_ending}" for case in TEST]


def evaluation_targets(plans):
    """Cross-validation, the selection and the test predictions."""
    return crossvalidation_targets(plans) + prediction_targets()


# The test images the report shows (the first few, sorted).
OVERLAY_TEST_CASES = sorted(TEST)[:3]


def report_targets(plans):
    """The report's tables and overlays: the outputs of the rules in report.smk."""
    if not CV_FOLDS:
        return []
    reports = (rules.report_tables, rules.report_overlays)
    return [str(f) for rule in reports for f in rule.output]


def report_table_inputs(wildcards):
    plans = load_json(plans_json())
    configurations = selected_configurations(plans)
    return {
        "dataset_json": DATASET_JSON,
        "fingerprint": f"{OUT}/fingerprint.json",
        "verify_report": f"{OUT}/verify_report.json",
        "plans": plans_json(),
        "summaries": [f"{OUT}/crossval/{c}/summary.json" for c in configurations],
        "ensembles": ensemble_dirs(plans),
        "selection": f"{OUT}/selection.json",
    }


def report_overlay_inputs(wildcards):
    """The selected model's validation predictions (any configuration or ensemble may be the one), the raw
    cases they belong to, and the first test images with their predictions."""
    plans = load_json(plans_json())
    configurations = selected_configurations(plans)
    return {
        "selection": f"{OUT}/selection.json",
        "splits": f"{OUT}/splits.json",
        "validation": [d for c in configurations for d in validation_dirs(c)]
        + ensemble_dirs(plans),
        "images": [f for c in DATASET.cases for f in raw_images(c)],
        "labels": [raw_label(c) for c in DATASET.cases],
        "test_images": [f for c in OVERLAY_TEST_CASES for f in test_images(c)],
        "test_predictions": [
            f"{OUT}/predictions/{c}{DATASET.file_ending}" for c in OVERLAY_TEST_CASES
        ],
    }


def planned_targets(wildcards):
    """Targets that exist only once the plan says which configurations there are."""
    plans = load_json(plans_json())
    return (
        preprocessed_targets(plans)
        + training_targets(plans)
        + evaluation_targets(plans)
        + report_targets(plans)
    )


def require_planned(plans, configurations, fix=STAGE_TARGETS_HINT):
    """Stop with a message, not a KeyError, when the config or a requested job (by a rule name that
    `snakemake --list-rules` shows, or by a file path) names configurations the plan lacks.
    """
    available = list(plans["configurations"])
    missing = [c for c in configurations if c not in available]
    if missing:
        raise WorkflowError(
            f"segflow: the plan for {DATASET.name} has no configuration {', '.join(missing)} "
            f"(it has {available}); {fix}"
        )


def planned_plans(configuration):
    """plans.json as the input of a preprocessing rule of ``configuration``, once the plan has it."""

    def plans(wildcards):
        path = plans_json()
        require_planned(load_json(path), [configuration])
        return ancient(path)

    return plans


def preprocessing_params(configuration):
    """The preprocessing settings of ``configuration``, as a params function of its preprocess rules."""

    def signature(wildcards):
        # plans_json(), not input.plans: a job asked for directly is in the DAG before the plan checkpoint
        # is known to be complete, and this then defers it instead of failing.
        plans = load_json(plans_json())
        settings = preprocessing_signature(plans, configuration)
        return json.dumps(
            {**settings, "dataset": dataset_json_signature()}, sort_keys=True
        )

    return signature


def fold_inputs(plans, configuration):
    """What a training or validation job of ``configuration`` reads (the plan must have it)."""
    require_planned(plans, [configuration])
    data = data_configuration(plans, configuration)
    cases = [f"{OUT}/preprocessed/{data}/{c}" for c in DATASET.cases]
    return {
        "plans": ancient(plans_json()),
        "dataset_json": ancient(DATASET_JSON),
        "splits": f"{OUT}/splits.json",
        "data": [f"{c}.npy" for c in cases],
        "seg": [f"{c}_seg.npy" for c in cases],
        "properties": [f"{c}.json" for c in cases],
        "previous_stage": previous_stage_dirs(plans, configuration),
    }


def training_inputs(wildcards):
    return fold_inputs(load_json(plans_json()), wildcards.configuration)


def training_params(wildcards):
    """Everything that decides the trained weights; a change reruns training (plans.json is ancient())."""
    plans = load_json(plans_json())
    return json.dumps(
        {
            "configuration": resolved_configuration(plans, wildcards.configuration),
            "labels": DATASET.dataset_json["labels"],
            "train": config["train"],
        },
        sort_keys=True,
    )


def validation_inputs(wildcards):
    plans = load_json(plans_json())
    inputs = fold_inputs(plans, wildcards.configuration)
    following = next_stage(plans, wildcards.configuration)
    grid = (
        [
            f"{OUT}/preprocessed/{data_configuration(plans, following)}/{c}.npy"
            for c in DATASET.cases
        ]
        if following
        else []
    )
    return {
        **inputs,
        "checkpoint": f"{OUT}/train/{wildcards.configuration}/fold_{wildcards.fold}/checkpoint_final.pt",
        "labels": [raw_label(c) for c in DATASET.cases],
        "next_stage_grid": grid,
    }


def next_stage_param(wildcards):
    return next_stage(load_json(plans_json()), wildcards.configuration)


def keeps_probabilities(wildcards):
    """Validation keeps probabilities only where ensembles will need them."""
    return len(selected_configurations(load_json(plans_json()))) > 1


def selection_inputs(wildcards):
    plans = load_json(plans_json())
    configurations = selected_configurations(plans)
    return {
        "summaries": [f"{OUT}/crossval/{c}/summary.json" for c in configurations],
        "ensembles": ensemble_dirs(plans),
        "validation": [d for c in configurations for d in validation_dirs(c)],
        "dataset_json": DATASET_JSON,
        "labels": [raw_label(c) for c in DATASET.cases],
    }


def selection_params(wildcards):
    plans = load_json(plans_json())
    configurations = selected_configurations(plans)
    return {
        "configurations": configurations,
        "pairs": ensemble_pairs(plans),
        "validation": {c: validation_dirs(c) for c in configurations},
    }


def prediction_checkpoints(wildcards):
    """Every trained fold model: which of them the selection uses is decided by selection.json."""
    plans = load_json(plans_json())
    configurations = set(selected_configurations(plans))
    for c in list(configurations):
        previous = resolved_configuration(plans, c).get("previous_stage")
        if previous:
            configurations.add(previous)
    return [
        f"{OUT}/train/{c}/fold_{f}/checkpoint_final.pt"
        for c in sorted(configurations)
        for f in CV_FOLDS
    ]
