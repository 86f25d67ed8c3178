# Shared state of the workflow, computed once at parse time from the config and the dataset folder.
import json

from segflow import demo
from segflow.batches import assign_batches
from segflow.dataset import discover
from segflow.device import uses_gpu
from segflow.errors import InputError
from segflow.io import load_json
from segflow.plan import data_configuration, resolved_configuration
from segflow.preprocess import preprocessing_signature


def load_dataset(config):
    if config["dataset"] == "demo":
        d = config["demo"]
        return demo.describe(d["path"], d["cases"], d["test_cases"], d["channels"])
    try:
        return discover(config["dataset"])
    except InputError as err:
        raise WorkflowError(f"segflow: bad input: {err}") from None


DATASET = load_dataset(config)
OUT = f"{config['results']}/{DATASET.name}"
LOGS = f"{OUT}/logs"
ENV = "../../envs/segflow.yaml"
BATCHES = assign_batches(DATASET.cases, config["case_batches"])
# An MSD task is converted into {OUT}/raw; an nnU-Net v2 raw folder is read where it is.
RAW = f"{OUT}/raw" if DATASET.kind == "msd" else str(DATASET.root)
DATASET_JSON = f"{RAW}/dataset.json"
# Training asks for a GPU when one will be used: device cuda, or auto on a machine with an NVIDIA driver.
USE_GPU = uses_gpu(config["device"])


def raw_images(case):
    ending = DATASET.file_ending
    return [
        f"{RAW}/imagesTr/{case}_{c:04d}{ending}" for c in range(DATASET.num_channels)
    ]


def raw_label(case):
    return f"{RAW}/labelsTr/{case}{DATASET.file_ending}"


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


def plans_json():
    """plans.json once the plan checkpoint has run (raises until then, which defers the dependent jobs)."""
    return checkpoints.plan.get().output.plans


def selected_configurations(plans):
    wanted = config["configurations"]
    available = list(plans["configurations"])
    if wanted == "all":
        wanted = available
    missing = [c for c in wanted if c not in available]
    if missing:
        raise WorkflowError(
            f"segflow: the plan for {DATASET.name} has no configuration {missing} "
            f"(it has {available}); change `configurations` in the config."
        )
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


def trained_configurations(plans):
    # The cascade needs the lowres predictions of all folds, which inference provides (not yet built).
    return [c for c in selected_configurations(plans) if c != "3d_cascade_fullres"]


def training_targets(plans):
    return [
        f"{OUT}/train/{c}/fold_{f}/{name}"
        for c in trained_configurations(plans)
        for f in config["folds"]
        for name in ("checkpoint_final.pt", "progress.png")
    ]


def planned_targets(wildcards):
    """Targets that exist only once the plan says which configurations there are."""
    plans = load_json(plans_json())
    return preprocessed_targets(plans) + training_targets(plans)


def preprocessing_params(wildcards, input):
    signature = preprocessing_signature(load_json(input.plans), wildcards.configuration)
    return json.dumps(
        {**signature, "dataset": dataset_json_signature()}, sort_keys=True
    )


def training_inputs(wildcards):
    plans = load_json(plans_json())
    data = data_configuration(plans, wildcards.configuration)
    cases = [f"{OUT}/preprocessed/{data}/{c}" for c in DATASET.cases]
    return {
        "plans": ancient(plans_json()),
        "dataset_json": ancient(DATASET_JSON),
        "splits": f"{OUT}/splits.json",
        "data": [f"{c}.npy" for c in cases],
        "seg": [f"{c}_seg.npy" for c in cases],
        "properties": [f"{c}.json" for c in cases],
    }


def training_params(wildcards, input):
    """Everything that decides the trained weights; a change reruns training (plans.json is ancient())."""
    plans = load_json(input.plans)
    return json.dumps(
        {
            "configuration": resolved_configuration(plans, wildcards.configuration),
            "labels": DATASET.dataset_json["labels"],
            "train": config["train"],
        },
        sort_keys=True,
    )
