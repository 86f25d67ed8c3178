# What each rule reads (input functions) and is given (params functions), given its wildcards.
import json
from types import SimpleNamespace

from segflow.candidates import parse as parse_candidate
from segflow.plans import data_folder, resolved_configuration
from segflow.preprocess import preprocessing_signature
from segflow.splits import NUM_FOLDS


def previous_stage_dirs(candidate):
    """A cascade trains on the cross-validation predictions of all five folds of its previous stage."""
    previous = candidate.previous_stage(candidate_plans(candidate))
    if not previous:
        return []
    return [RESULTS.validation(previous.name, f) for f in range(NUM_FOLDS)]


def report_table_inputs(wildcards):
    return {
        "dataset_json": DATASET_JSON,
        "fingerprint": RESULTS.fingerprint,
        "verify_report": RESULTS.verify_report,
        "plans": [plans_json(p) for p in PLANNER_NAMES]
        + [RESULTS.plans(p, n) for p, n in NETWORK_PLANS.values()],
        "summaries": crossval_summaries(),
        "ensembles": ensemble_dirs(),
        "selection": RESULTS.selection,
        "budget": RESULTS.budget,
    }


def report_fold_dirs(wildcards):
    """Each candidate's fold folders, whose training logs the budget table reads."""
    return {c: [RESULTS.fold(c, f) for f in config["folds"]] for c in candidate_names()}


def report_overlay_inputs(wildcards):
    """The selected model's validation predictions (any candidate or ensemble may be the one) and the first
    test images with their predictions. (The raw cases the validation overlays show are inputs of the
    preprocessing that validation depends on.)"""
    return {
        "selection": RESULTS.selection,
        "splits": RESULTS.splits,
        "validation": [d for c in candidate_names() for d in validation_dirs(c)]
        + ensemble_dirs(),
        "test_images": [f for c in OVERLAY_TEST_CASES for f in test_images(c)],
        "test_predictions": [
            RESULTS.prediction(c, DATASET.file_ending) for c in OVERLAY_TEST_CASES
        ],
    }


def preprocessing_plans(wildcards):
    """The plans that make a preprocessing job's data folder, once they have its configuration."""
    candidate = DATA_FOLDERS[wildcards.folder]
    path = plans_json(candidate.planner)
    require_planned(read_plans(path), [candidate.configuration])
    return ancient(path)


def preprocessed_case_files(wildcards):
    """A preprocessing job's per-case files in its data folder (case_files)."""
    folder = RESULTS.data_folder(wildcards.folder)
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
        "splits": RESULTS.splits,
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
        "checkpoint": RESULTS.checkpoint(wildcards.candidate, wildcards.fold),
        "verify_report": ancient(RESULTS.verify_report),
        "next_stage_grid": (
            preprocessed_data(data_folder_of(following)) if following else []
        ),
    }


def next_stage_param(wildcards):
    following = next_stage(parse_candidate(wildcards.candidate))
    return following.configuration if following else None


def selection_inputs(wildcards):
    names = candidate_names()
    return {
        "summaries": crossval_summaries(),
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
    return [RESULTS.checkpoint(c, f) for c in sorted(names) for f in CV_FOLDS]


# The budget (budget.smk, segflow.budget): every candidate's jobs and what each declares on its first attempt.


def budget_inputs(wildcards):
    """The plans and dataset.json, ancient: rewritten after a case was added, they change nothing the budget
    says unless its params (each candidate's patch, batch and memory) change, which reruns it.
    """
    paths = dict.fromkeys(str(candidate_plans_path(c)) for c in selected_candidates())
    return {
        "plans": [ancient(p) for p in paths],
        "dataset_json": ancient(DATASET_JSON),
        "verify_report": ancient(RESULTS.verify_report),
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
