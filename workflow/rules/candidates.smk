# What the run trains: its candidates (segflow.candidates), each planner's plans as the plan checkpoints write
# them, and the data folders they preprocess.
import functools
import os

from segflow.candidates import Candidate, candidate_pattern, data_folders, network_plans
from segflow.errors import stop_workflow
from segflow.io import load_json
from segflow.networks import DEFAULT_NETWORK, with_network
from segflow.plan import DEFAULT_PLANNER
from segflow.plans import data_folder, resolved_configuration


def num_outputs():
    """The network's output channels: labels (with background) or regions."""
    return len(DATASET.dataset_json["labels"])


def with_previous_stage(candidate):
    """A candidate, and the candidate of its previous stage where it is a cascade's."""
    previous = candidate.previous_stage(candidate_plans(candidate))
    return [candidate, previous] if previous else [candidate]


# Planners and networks whose candidates train (config `planners` and `networks`, segflow/candidates.py).
# The default planner always plans: plans.json is the dataset's reference plan, and its 2d and 3d_fullres
# data are every planner's. Every network trains on every planner's plans.
PLANNER_NAMES = config["planners"]
PRESETS = [p for p in PLANNER_NAMES if p != DEFAULT_PLANNER]
NETWORK_NAMES = config["networks"]
# Candidate names a rule's {candidate} wildcard may take; plans files of a planner with another network (file
# stem -> planner, network); preprocessed data folders and the candidate whose plans make each.
CANDIDATE_PATTERN = candidate_pattern(PLANNER_NAMES, NETWORK_NAMES)
NETWORK_PLANS = network_plans(PLANNER_NAMES, NETWORK_NAMES)
DATA_FOLDERS = data_folders(PLANNER_NAMES)
DATA_FOLDER_PATTERN = "|".join(DATA_FOLDERS)


def plans_json(planner=DEFAULT_PLANNER):
    """A planner's plans once its checkpoint has run (raises until then, which defers the dependent jobs)."""
    if workflow.remote_exec:
        # A cluster job was submitted after the plan ran, but its own one-job DAG never sees the plan
        # job finish, so the checkpoint would stay "incomplete" there.
        return RESULTS.plans(planner)
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
    return RESULTS.candidate_plans(candidate)


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


def next_stage(candidate):
    """The cascade a candidate's validation feeds, when that cascade is trained."""
    plans = candidate_plans(candidate)
    following = plans["configurations"][candidate.configuration].get("next_stage")
    if not following:
        return None
    following = candidate.with_configuration(following)
    return following if following in selected_candidates() else None


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


def keeps_probabilities(wildcards):
    """Validation keeps probabilities only where ensembles will need them: where the run has more than one
    candidate. Several planners or networks make several; for one of each, the planner's configurations tell
    (its plans are a validation's input: another planner's are not, and a DAG that targets the validation alone
    has not run their checkpoint)."""
    return len(PLANNER_NAMES) * len(NETWORK_NAMES) > 1 or len(selected_candidates()) > 1
