# What each job declares (threads, memory, runtime, GPUs): segflow.resources's estimates, given the job's cases,
# plans and config. A cluster kills a job that uses more than it declared.
import functools
import os
from pathlib import Path
from types import SimpleNamespace

from snakemake.exceptions import IncompleteCheckpointException

from segflow.batches import files_in_manifests
from segflow.candidates import parse as parse_candidate
from segflow.device import uses_gpu
from segflow.io import load_json
from segflow.networks import sample_activations
from segflow.plans import resolved_configuration
from segflow.resources import (
    TRAINING_PROCESS_MB,
    average_case_mem_mb,
    case_voxels,
    held_parameters,
    inference_mem_mb,
    per_case_runtime_minutes,
    preprocessing_mem_mb,
    training_mem_mb,
    user_mem_mb,
)


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
    path = Path(RESULTS.plans())
    if not path.is_file():
        return None
    plans = read_plans(path)
    name = "3d_fullres" if "3d_fullres" in plans["configurations"] else "2d"
    return resolved_configuration(plans, name)["spacing"]


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
    verified = Path(RESULTS.verify_report)
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


def gpus(wildcards):
    """GPUs a training, validation or prediction job asks for: one when it will use one (device cuda, or
    auto on a machine with an NVIDIA driver, or auto on a cluster, whose submit host has no GPU but whose
    GPU partition has). A function, because the executor is known only once the jobs are scheduled.
    """
    on_cluster = workflow.non_local_exec or workflow.remote_exec
    device = config["device"]
    return int(uses_gpu(device) or (on_cluster and device != "cpu"))


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
