"""How much memory a job will use, estimated from what it will do, so that what it declares (``mem_mb``) is
what a cluster grants it.

A cluster kills a job that uses more than it declared, and a Snakemake retry of the same request is killed
again; a job that declares far more waits longer in the queue and blocks others. The estimates follow the
job's largest arrays, with constants measured on this project's runs (Snakemake's benchmark files: the
resident memory of the job's process tree, workers included):

* training: the process and its loader workers, plus, on a CPU, the network's activations: ``ACTIVATION_COPIES``
  times the convolution outputs of a batch (the planner's VRAM proxy, ``segflow.plan``) in float32. Measured:
  the demo's 3d_fullres fold (66 MB of convolution outputs) 1.28 GB; an MSD Prostate 3d_fullres fold (patch
  20 x 320 x 256, batch 2: 3.6 GB of convolution outputs) 11.1 GB.
* validation and prediction: the process, the network and the fold weights it loads (the checkpoints' network
  weights only, ``segflow.io.load_checkpoint(mapped=True)``), the largest case's arrays (image, logits, export;
  probabilities where ensembles need them) and, on a CPU, a tile's activations. Measured: a synthetic
  65 x 340 x 340 case with 2 channels and 3 classes, 2.26 GB; a 512 x 512 x 1 000 CT, 8.17 GB.

Crop and preprocessing jobs also declare their wall time (``runtime``), from their cases' voxels; training,
validation and prediction take the config's, as their time depends on the device and the budget.

Each estimate gets ``MARGIN`` on top and grows by half for every retry (Snakemake's ``attempt``), as Snakemake
users expect of a job that ran out anyway.
"""

from __future__ import annotations

import math

from segflow.networks import parameter_count, recipe_of, sample_activations
from segflow.networks.family import ACTIVATION_COPIES

MB = 2**20
FLOAT32 = 4
#: Resident memory of a training process (python, torch, segflow, matplotlib) and of each loader worker.
TRAINING_PROCESS_MB = 800
WORKER_MB = 500
#: A CUDA context's host memory (its libraries mapped and touched).
CUDA_CONTEXT_MB = 2500
#: Resident memory of a preprocessing job's process, and the float32 arrays of the largest case's voxels it
#: holds at once: per channel the image as read, its spline coefficients (float64) and its resampled copy; and
#: the label map's resampling (two float64 scores, the label maps). Measured (bench/memory.py): a 512 x 512 x
#: 1 000 CT resampled to 0.8 mm, 7.65 GB (9 arrays of its voxels are 9.4 GB); large set: 0.30 GB.
PREPROCESSING_PROCESS_MB = 200
PREPROCESSING_CHANNEL_COPIES = 4
PREPROCESSING_OTHER_COPIES = 5
#: Resident memory of a validation or prediction process before its first case.
INFERENCE_PROCESS_MB = 800
#: Arrays of the largest case's voxels that inference holds at once, in float32 units: per channel the image as
#: read and as preprocessed; per class the logits; and the tile weights, the export's bands of resampled logits
#: and the label maps (on the cropped grid and in the whole image). Keeping probabilities (for ensembles) adds,
#: per class, the logits resampled, their probabilities and those pasted into the whole image. Measured
#: (bench/prediction_stages.py, 2026-12-07): a 512 x 512 x 1 000 CT, 1 channel, 3 classes, predicted in 6.91 GB
#: (9 of these arrays are 9.4 GB; 8.17 GB before the export ran in torch).
INFERENCE_CHANNEL_COPIES = 2
INFERENCE_CLASS_COPIES = 1
INFERENCE_OTHER_COPIES = 4
PROBABILITY_CLASS_COPIES = 3
#: Cases streamed (segflow/stream.py): beside the case in the network, the next one read and preprocessed (per
#: channel) and the previous one's logits being exported (per class).
STREAM_CHANNEL_COPIES = 1
STREAM_CLASS_COPIES = 1
#: On a CPU, a tile's convolution outputs held at once, as a fraction of the planner's count for a training
#: sample. Measured: a 65 x 340 x 340 case (2 channels, 3 classes; patch 40 x 192 x 224, 1.9 GB of convolution
#: outputs) validated in 2.26 GB, about 1.5 GB of it the network's.
TILE_ACTIVATION_FRACTION = 1.0
#: Optimiser state per parameter, in float32 copies: SGD's momentum buffer, AdamW's two moments.
OPTIMIZER_MOMENTS = {"sgd": 1, "adamw": 2}
MARGIN = 1.25
#: Wall time of a per-case job (crop, preprocessing) per voxel and channel, and its start-up. Measured: a
#: 512 x 512 x 1 000 CT preprocessed (cubic resampling to 0.8 mm) in 150 s on this project's 2 cores, 0.57 us
#: per voxel; twice that here, as cluster cores and file systems vary.
SECONDS_PER_VOXEL = 1.2e-6
PER_CASE_JOB_STARTUP_S = 60
MIN_RUNTIME_MINUTES = 10


def scaled(mb: float, attempt: int = 1) -> int:
    """``mb`` with the margin, half again for each retry, rounded up to 100 MB."""
    total = mb * MARGIN * (1 + 0.5 * (attempt - 1))
    return int(math.ceil(total / 100) * 100)


def training_mem_mb(
    configuration: dict,
    num_classes: int,
    threads: int,
    on_gpu: bool,
    attempt: int = 1,
    in_channels: int = 1,
) -> int:
    """Host memory of a training job of a (resolved) plans configuration. On a GPU the host holds the network
    once, as it is built before it moves there; on a CPU also its gradients and the optimiser's state."""
    workers = loader_workers(threads, on_gpu)
    mb = TRAINING_PROCESS_MB + (workers + validation_workers(workers)) * WORKER_MB
    parameters = parameter_count(configuration, in_channels, num_classes)
    if on_gpu:
        mb += CUDA_CONTEXT_MB + parameters * FLOAT32 / MB
    else:
        copies = 2 + OPTIMIZER_MOMENTS[recipe_of(configuration).optimizer]
        activations = sample_activations(configuration, num_classes) * configuration["batch_size"]
        mb += (copies * parameters + ACTIVATION_COPIES * activations) * FLOAT32 / MB
    return scaled(mb, attempt)


def inference_mem_mb(
    voxels: int,
    channels: int,
    num_classes: int,
    on_gpu: bool,
    tile_activations: int = 0,
    with_probabilities: bool = False,
    attempt: int = 1,
    held_parameters: int = 0,
    streamed: bool = False,
) -> int:
    """Host memory of a validation or prediction job whose largest case has ``voxels`` voxels (in its original
    geometry or resampled, whichever is larger), for a network with ``tile_activations`` convolution outputs per
    tile (``sample_activations``; on a GPU they are the GPU's), and ``held_parameters`` float32 parameters (the
    function of that name); ``streamed``: cases before and after the current one in flight (``Stream``)."""
    copies = INFERENCE_CHANNEL_COPIES * channels + INFERENCE_CLASS_COPIES * num_classes + INFERENCE_OTHER_COPIES
    if with_probabilities:
        copies += PROBABILITY_CLASS_COPIES * num_classes
    if streamed:
        copies += STREAM_CHANNEL_COPIES * channels + STREAM_CLASS_COPIES * num_classes
    mb = INFERENCE_PROCESS_MB + (copies * voxels + held_parameters) * FLOAT32 / MB
    mb += CUDA_CONTEXT_MB if on_gpu else TILE_ACTIVATION_FRACTION * tile_activations * FLOAT32 / MB
    return scaled(mb, attempt)


def held_parameters(members: list[dict], folds: int, in_channels: int, num_classes: int) -> int:
    """The parameters an inference job holds for the (resolved) plans configurations of the models it runs at
    once: each one's fold weights, and its network."""
    return sum((folds + 1) * parameter_count(c, in_channels, num_classes) for c in members)


def preprocessing_mem_mb(voxels: int, channels: int, attempt: int = 1) -> int:
    """Host memory of a preprocessing job whose largest case has ``voxels`` voxels (original or resampled,
    whichever is larger): the image as read, its resampling's spline copies, the label map."""
    arrays = (PREPROCESSING_CHANNEL_COPIES * channels + PREPROCESSING_OTHER_COPIES) * voxels * FLOAT32 / MB
    return scaled(PREPROCESSING_PROCESS_MB + arrays, attempt)


def per_case_runtime_minutes(voxels: int, attempt: int = 1) -> int:
    """Wall-time limit (minutes) of a crop or preprocessing job over ``voxels`` voxels in all (every case and
    channel), with the margin and half again for each retry: a job its time limit killed asks for more."""
    seconds = (PER_CASE_JOB_STARTUP_S + SECONDS_PER_VOXEL * voxels) * MARGIN * (1 + 0.5 * (attempt - 1))
    return max(MIN_RUNTIME_MINUTES, math.ceil(seconds / 60))


def largest_voxels(shape, spacing, target_spacing) -> int:
    """The voxels of a case of ``shape`` at ``spacing`` (any axis order) or, if more, once resampled to the
    3D ``target_spacing``: its physical volume over a target voxel's, whatever the order of the axes."""
    resampled = math.prod(shape) * math.prod(spacing) / math.prod(target_spacing)
    return int(max(math.prod(shape), resampled))


def case_voxels(record: dict, target_spacing) -> int:
    """A verified case's voxels (its verification record's shape and spacing), or its voxels once resampled to
    ``target_spacing`` if more; its own voxels where there is no target of its dimension yet."""
    if target_spacing is None or len(target_spacing) != len(record["shape"]):
        return math.prod(record["shape"])
    return largest_voxels(record["shape"], record["spacing"], target_spacing)


def average_case_mem_mb(size_mb: float, n_cases: int, attempt: int = 1, factor: float = 40, base: int = 500) -> int:
    """A batch job's memory: its cases run one after the other, so a multiple of the average case's file size."""
    return user_mem_mb(int(base + factor * size_mb / max(n_cases, 1)), attempt)


def loader_workers(threads: int, on_gpu: bool) -> int:
    """Loader worker processes of a training job. On a GPU all threads but the main one feed it (nnU-Net uses
    12). On a CPU the training step's arithmetic already keeps every thread busy: one worker cuts and augments
    the batches (a batch at once or sample by sample, as ``augment_on`` says) while torch computes, as
    nnunetv2's workers do; with one thread the training process does it between its steps."""
    if on_gpu:
        return max(1, threads - 1)
    return 1 if threads > 1 else 0


def validation_workers(training_workers: int) -> int:
    """Loader worker processes of a training job's validation batches, a pool beside the training's for the
    whole training (as nnU-Net keeps max(1, n / 2)); none where the training has at most one: a validation
    batch is only cut, which the training process does between steps at no cost worth a process."""
    return training_workers // 2


def user_mem_mb(mb: int, attempt: int = 1) -> int:
    """A ``mem_mb`` the config sets: as given, half again for each retry."""
    return int(mb * (1 + 0.5 * (attempt - 1)))
