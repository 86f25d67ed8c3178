"""Experiment planning: nnU-Net v2's default planner and its residual-encoder presets (method reference §3,
§3.10), from the fingerprint alone.

``plans.json`` follows nnU-Net's plans format (``configurations`` with ``2d``, ``3d_fullres`` and, when
the data call for it, ``3d_lowres`` + ``3d_cascade_fullres``; ``transpose_forward``/``backward``;
``foreground_intensity_properties_per_channel``), so a reader who knows nnU-Net's plans knows ours;
``segflow.plans`` reads them.

The VRAM proxy is computed analytically: the number of activations of every convolution output of the
network (encoder, decoder, transposed convolutions, final head) for batch 1, exactly what nnU-Net obtains by
instantiating the network. No torch import is needed to plan. The presets (``PLANNERS``) differ from the
default planner in the network (a ResidualEncoderUNet), the reference activations and GPU memory they are tuned
to, the dataset coverage cap (none), and the shrink rule: the default planner shrinks the patch until a batch of
the minimum size fits, the presets until a batch of the reference size fits. 2d and 3d_fullres keep the default
planner's data identifiers (same spacing, same data); only a preset's 3d_lowres is its own.
"""

from __future__ import annotations

from copy import deepcopy
from typing import NamedTuple

import numpy as np

from segflow.plans import PLANS_NAME

ANISOTROPY_THRESHOLD = 3.0
BASE_FEATURES = 32
MAX_FEATURES = {2: 512, 3: 320}
MIN_FEATURE_MAP_EDGE = 4
CONVS_PER_STAGE = 2
REFERENCE_BATCH = {2: 12, 3: 2}
MIN_BATCH_SIZE = 2
RESIDUAL_BLOCKS_ENCODER = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)
RESIDUAL_BLOCKS_DECODER = 1
LOWRES_CREATION_THRESHOLD = 0.25
LOWRES_SPACING_STEP = 1.03
INITIAL_PATCH_EDGE = {2: 2048, 3: 256}
NETWORK_CLASS = "dynamic_network_architectures.architectures.unet."


class Planner(NamedTuple):
    """One of nnU-Net's planners: what it calls its plans, the network it plans for and its memory model."""

    plans_name: str
    nnunet_class: str  # the planner class of nnunetv2 this one reproduces
    network: str  # PlainConvUNet | ResidualEncoderUNet
    reference_activations: dict[int, float]  # by dimensionality, for reference_gpu_gb and REFERENCE_BATCH
    reference_gpu_gb: float  # also the GPU memory the presets plan for by default
    max_dataset_coverage: float  # a batch covers at most this fraction of the dataset's voxels
    shrink_batch: str  # the patch shrinks until a batch of this size fits: "minimum" or "reference"


DEFAULT_PLANNER = "default"
PLANNERS = {
    DEFAULT_PLANNER: Planner(
        "nnUNetPlans", "ExperimentPlanner", "PlainConvUNet", {2: 85e6, 3: 560e6}, 8.0, 0.05, "minimum"
    ),
    "resenc_m": Planner(
        "nnUNetResEncUNetMPlans",
        "nnUNetPlannerResEncM",
        "ResidualEncoderUNet",
        {2: 135e6, 3: 680e6},
        8.0,
        1.0,
        "reference",
    ),
    "resenc_l": Planner(
        "nnUNetResEncUNetLPlans",
        "nnUNetPlannerResEncL",
        "ResidualEncoderUNet",
        {2: 380e6, 3: 2.1e9},
        24.0,
        1.0,
        "reference",
    ),
    "resenc_xl": Planner(
        "nnUNetResEncUNetXLPlans",
        "nnUNetPlannerResEncXL",
        "ResidualEncoderUNet",
        {2: 560e6, 3: 3.6e9},
        40.0,
        1.0,
        "reference",
    ),
}

NORMALIZATION_BY_CHANNEL_NAME = {
    "ct": "CTNormalization",
    "nonorm": "NoNormalization",
    "zscore": "ZScoreNormalization",
    "rescale_to_0_1": "RescaleTo01Normalization",
    "rgb_to_0_1": "RGBTo01Normalization",
}
#: Only z-score can normalise inside the non-zero mask and leave the outside at 0.
SCHEMES_SUPPORTING_MASK = {"ZScoreNormalization"}

RESAMPLING_FN = "resample_data_or_seg_to_shape"
RESAMPLING_DATA_KWARGS = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
RESAMPLING_SEG_KWARGS = {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None}
RESAMPLING_PROBABILITIES_KWARGS = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}


# --- spacing, transpose, shapes ------------------------------------------------------------------------


def fullres_target_spacing(spacings, shapes_after_crop) -> np.ndarray:
    """Median spacing; on anisotropic data the coarse axis gets the 10th percentile instead (§3.2)."""
    spacings = np.vstack(spacings).astype(np.float64)
    target = np.percentile(spacings, 50, axis=0)
    target_size = np.percentile(np.vstack(shapes_after_crop), 50, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    other_spacings = [target[i] for i in others]
    other_sizes = [target_size[i] for i in others]
    anisotropic_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(other_spacings)
    anisotropic_voxels = target_size[worst] * ANISOTROPY_THRESHOLD < min(other_sizes)
    if anisotropic_spacing and anisotropic_voxels:
        coarse = np.percentile(spacings[:, worst], 10)
        if coarse < max(other_spacings):
            coarse = max(max(other_spacings), coarse) + 1e-5
        target[worst] = coarse
    return target


def transpose_axes(target_spacing) -> tuple[list[int], list[int]]:
    """Coarsest axis first (ties: the first), the others in their order; and the inverse permutation."""
    coarse = int(np.argmax(target_spacing))
    forward = [coarse] + [i for i in range(len(target_spacing)) if i != coarse]
    backward = [forward.index(i) for i in range(len(forward))]
    return forward, backward


def compute_new_shape(shape, spacing, new_spacing) -> list[int]:
    return [int(round(s / n * k)) for s, n, k in zip(spacing, new_spacing, shape, strict=True)]


# --- network topology and the VRAM proxy ----------------------------------------------------------------


class Topology(NamedTuple):
    pools_per_axis: list[int]
    strides: list[list[int]]  # one per stage, stage 0 = [1, ...]
    kernel_sizes: list[list[int]]  # one per stage
    patch_size: list[int]
    divisor: list[int]  # patch edges must be multiples of these


def pad_to_multiple(shape, divisor) -> list[int]:
    return [int(np.ceil(s / d) * d) for s, d in zip(shape, divisor, strict=True)]


def topology(spacing, patch_size, min_edge: int = MIN_FEATURE_MAP_EDGE) -> Topology:
    """Strides and kernels by nnU-Net's rule: downsample every axis whose current spacing is within a factor
    2 of the finest and whose size allows it (>= 2 * min_edge; a lone axis needs >= 3 * min_edge); a
    kernel edge becomes 3 once its axis is within factor 2 of the finest spacing (§3.5)."""
    dim = len(spacing)
    spacing_now = [float(s) for s in spacing]
    size_now = [float(s) for s in patch_size]
    strides = [[1] * dim]
    kernels = []
    pools = [0] * dim
    kernel = [1] * dim
    while True:
        axes = [i for i in range(dim) if size_now[i] >= 2 * min_edge]
        if not axes:
            break
        finest = min(spacing_now[i] for i in axes)
        axes = [i for i in axes if spacing_now[i] / finest < 2]
        if len(axes) == 1 and size_now[axes[0]] < 3 * min_edge:
            break
        if not axes:
            break
        for d in range(dim):
            if kernel[d] != 3 and spacing_now[d] / min(spacing_now) < 2:
                kernel[d] = 3
        stride = [1] * dim
        for axis in axes:
            stride[axis] = 2
            pools[axis] += 1
            spacing_now[axis] *= 2
            size_now[axis] = float(np.ceil(size_now[axis] / 2))
        strides.append(stride)
        kernels.append(list(kernel))
    kernels.append([3] * dim)  # the bottleneck
    divisor = [2**p for p in pools]
    return Topology(pools, strides, kernels, pad_to_multiple(patch_size, divisor), divisor)


def features_per_stage(n_stages: int, dim: int) -> list[int]:
    return [min(MAX_FEATURES[dim], BASE_FEATURES * 2**i) for i in range(n_stages)]


def residual_blocks_per_stage(n_stages: int) -> list[int]:
    return list(RESIDUAL_BLOCKS_ENCODER[:n_stages])


def stage_sizes(patch_size, strides) -> list[list[int]]:
    """The spatial size of every encoder stage's output."""
    sizes, size = [], list(patch_size)
    for stride in strides:
        size = [s // t for s, t in zip(size, stride, strict=True)]
        sizes.append(size)
    return sizes


def decoder_feature_map_size(sizes, features, num_classes: int, convs_decoder: int) -> int:
    """Decoder stages from just below the bottleneck up: conv blocks + transposed conv, then the head."""
    total = 0
    for stage in range(len(sizes) - 2, -1, -1):
        total += (convs_decoder + 1) * features[stage] * int(np.prod(sizes[stage]))
    return total + num_classes * int(np.prod(sizes[0]))


def conv_feature_map_size(
    patch_size,
    strides,
    features,
    num_classes: int,
    convs_encoder: int = CONVS_PER_STAGE,
    convs_decoder: int = CONVS_PER_STAGE,
) -> int:
    """Activations of all convolution outputs of a PlainConvUNet for one sample, without deep supervision."""
    sizes = stage_sizes(patch_size, strides)
    total = sum(convs_encoder * f * int(np.prod(s)) for f, s in zip(features, sizes, strict=True))
    return total + decoder_feature_map_size(sizes, features, num_classes, convs_decoder)


def residual_feature_map_size(patch_size, strides, features, num_classes: int, blocks_encoder) -> int:
    """The same for a ResidualEncoderUNet: the stem, two convolutions per residual block, a projection on the
    first block of every stage that changes the width or the size (counted as nnU-Net counts it, even where
    the projection is only a pooling), one convolution per decoder stage."""
    sizes = stage_sizes(patch_size, strides)
    total = features[0] * int(np.prod(patch_size))  # the stem
    channels, size = features[0], list(patch_size)
    for f, s, blocks in zip(features, sizes, blocks_encoder, strict=True):
        total += 2 * blocks * f * int(np.prod(s))
        if f != channels or s != size:
            total += f * int(np.prod(s))
        channels, size = f, s
    return total + decoder_feature_map_size(sizes, features, num_classes, RESIDUAL_BLOCKS_DECODER)


def feature_map_size(planner: Planner, topo: Topology, num_classes: int) -> int:
    dim = len(topo.patch_size)
    features = features_per_stage(len(topo.strides), dim)
    if planner.network == "ResidualEncoderUNet":
        blocks = residual_blocks_per_stage(len(topo.strides))
        return residual_feature_map_size(topo.patch_size, topo.strides, features, num_classes, blocks)
    return conv_feature_map_size(topo.patch_size, topo.strides, features, num_classes)


def architecture(dim: int, topo: Topology, planner: Planner = PLANNERS[DEFAULT_PLANNER]) -> dict:
    n = len(topo.strides)
    conv = "torch.nn.modules.conv.Conv3d" if dim == 3 else "torch.nn.modules.conv.Conv2d"
    norm = (
        "torch.nn.modules.instancenorm.InstanceNorm3d" if dim == 3 else "torch.nn.modules.instancenorm.InstanceNorm2d"
    )
    if planner.network == "ResidualEncoderUNet":
        blocks = {"n_blocks_per_stage": residual_blocks_per_stage(n)}
        blocks["n_conv_per_stage_decoder"] = [RESIDUAL_BLOCKS_DECODER] * (n - 1)
    else:
        blocks = {"n_conv_per_stage": [CONVS_PER_STAGE] * n, "n_conv_per_stage_decoder": [CONVS_PER_STAGE] * (n - 1)}
    return {
        "network_class_name": NETWORK_CLASS + planner.network,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": features_per_stage(n, dim),
            "conv_op": conv,
            "kernel_sizes": topo.kernel_sizes,
            "strides": topo.strides,
            **blocks,
            "conv_bias": True,
            "norm_op": norm,
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


# --- one configuration ----------------------------------------------------------------------------------


def initial_patch_size(spacing, median_shape) -> list[float]:
    """A patch with the spacing's aspect ratio and the volume of 256^3 (2048^2 in 2D), clipped to the median."""
    dim = len(spacing)
    inverse = 1 / np.asarray(spacing, dtype=np.float64)
    scale = (INITIAL_PATCH_EDGE[dim] ** dim / np.prod(inverse)) ** (1 / dim)
    return [min(round(float(r * scale)), m) for r, m in zip(inverse, median_shape, strict=True)]


def plan_configuration(
    spacing,
    median_shape,
    dataset_voxels: float,
    num_classes: int,
    gpu_memory_gb: float,
    data_identifier: str,
    planner: Planner = PLANNERS[DEFAULT_PLANNER],
) -> dict:
    """Patch, topology and batch size of one configuration (§3.5, §3.10)."""
    dim = len(spacing)
    median_shape = [int(m) if isinstance(m, (int, np.integer)) else float(m) for m in median_shape[:dim]]
    topo = topology(spacing, initial_patch_size(spacing, median_shape))
    reference = planner.reference_activations[dim] * gpu_memory_gb / planner.reference_gpu_gb
    reference_batch = REFERENCE_BATCH[dim]

    def too_large(activations: int) -> bool:
        if planner.shrink_batch == "reference":
            return activations > reference
        return activations / reference_batch * MIN_BATCH_SIZE > reference

    activations = feature_map_size(planner, topo, num_classes)
    while too_large(activations):
        ratios = [p / m for p, m in zip(topo.patch_size, median_shape, strict=True)]
        axis = int(np.argsort(ratios, kind="stable")[-1])
        # Step by the divisor of the tentatively reduced patch, so that no valid size is skipped.
        tentative = list(topo.patch_size)
        tentative[axis] -= topo.divisor[axis]
        step = topology(spacing, tentative).divisor[axis]
        patch = list(topo.patch_size)
        patch[axis] -= step
        topo = topology(spacing, patch)
        activations = feature_map_size(planner, topo, num_classes)
    batch_size = round(reference / activations * reference_batch)
    coverage_cap = round(dataset_voxels * planner.max_dataset_coverage / np.prod(topo.patch_size, dtype=np.float64))
    batch_size = max(min(batch_size, coverage_cap), MIN_BATCH_SIZE)
    return {
        "data_identifier": data_identifier,
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(batch_size),
        "patch_size": [int(p) for p in topo.patch_size],
        "median_image_size_in_voxels": median_shape,
        "spacing": [float(s) for s in spacing],
        "resampling_fn_data": RESAMPLING_FN,
        "resampling_fn_seg": RESAMPLING_FN,
        "resampling_fn_data_kwargs": dict(RESAMPLING_DATA_KWARGS),
        "resampling_fn_seg_kwargs": dict(RESAMPLING_SEG_KWARGS),
        "resampling_fn_probabilities": RESAMPLING_FN,
        "resampling_fn_probabilities_kwargs": dict(RESAMPLING_PROBABILITIES_KWARGS),
        "architecture": architecture(dim, topo, planner),
    }


def normalization(channel_names: dict, median_relative_size: float) -> tuple[list[str], list[bool]]:
    """Scheme per channel from its name (§3.8); the mask is used only for z-score on croppable data."""
    ordered = [channel_names[k] for k in sorted(channel_names, key=int)]
    schemes = [NORMALIZATION_BY_CHANNEL_NAME.get(str(n).lower(), "ZScoreNormalization") for n in ordered]
    use_mask = [median_relative_size < 0.75 and s in SCHEMES_SUPPORTING_MASK for s in schemes]
    return schemes, use_mask


def lowres_configuration(fullres: dict, median_shape, num_training: int, plan, data_identifier: str) -> dict | None:
    """Coarsen the spacing by 3 % steps until the patch covers >= 25 % of the median image (§3.6); drop the
    result if it is less than half the fullres voxels. None when no lowres stage is needed.
    ``plan(spacing, median_shape, dataset_voxels, data_identifier)`` plans one configuration."""
    fullres_spacing = np.asarray(fullres["spacing"], dtype=np.float64)
    median_shape = np.asarray(median_shape, dtype=np.float64)
    median_voxels = np.prod(median_shape, dtype=np.float64)
    patch_voxels = np.prod(fullres["patch_size"], dtype=np.float64)
    spacing = fullres_spacing.copy()
    lowres = None
    while patch_voxels / median_voxels < LOWRES_CREATION_THRESHOLD:
        finer = spacing.max() / spacing > 2
        if finer.any():
            spacing[finer] *= LOWRES_SPACING_STEP
        else:
            spacing *= LOWRES_SPACING_STEP
        lowres_shape = fullres_spacing / spacing * median_shape
        median_voxels = np.prod(lowres_shape, dtype=np.float64)
        lowres = plan(
            spacing, [round(float(s)) for s in lowres_shape], float(median_voxels * num_training), data_identifier
        )
        patch_voxels = np.prod(lowres["patch_size"], dtype=np.float64)
    if np.prod(median_shape, dtype=np.float64) / median_voxels < 2:
        return None
    return lowres


def plan_experiment(
    fingerprint: dict,
    dataset_json: dict,
    gpu_memory_gb: float | None = None,
    dataset_name: str = "",
    planner: str = DEFAULT_PLANNER,
) -> dict:
    """The complete plans for a dataset: configurations, transposition and normalisation (§3). ``planner``
    names one of ``PLANNERS``; ``gpu_memory_gb`` defaults to the GPU memory that planner is tuned to."""
    preset = PLANNERS[planner]
    gpu_memory_gb = preset.reference_gpu_gb if gpu_memory_gb is None else gpu_memory_gb
    spacings = np.vstack(fingerprint["spacings"]).astype(np.float64)
    shapes = np.vstack(fingerprint["shapes_after_crop"])
    target = fullres_target_spacing(spacings, shapes)
    forward, backward = transpose_axes(target)
    new_shapes = [compute_new_shape(sh, sp, target) for sh, sp in zip(shapes, spacings, strict=True)]
    median_shape = np.median(np.array(new_shapes, dtype=np.float64), axis=0)[forward]
    target_t = target[forward]
    num_training = int(dataset_json["numTraining"])
    num_classes = len(dataset_json["labels"])
    dataset_voxels = float(np.prod(median_shape, dtype=np.float64) * num_training)
    schemes, use_mask = normalization(dataset_json["channel_names"], fingerprint["median_relative_size_after_cropping"])
    shared = {"normalization_schemes": schemes, "use_mask_for_norm": use_mask}

    def plan(spacing, shape, voxels, data_identifier):
        return plan_configuration(spacing, shape, voxels, num_classes, gpu_memory_gb, data_identifier, preset)

    configurations = {"2d": {**plan(target_t[1:], median_shape[1:], dataset_voxels, f"{PLANS_NAME}_2d")}}
    configurations["2d"].update(shared, batch_dice=True)
    if median_shape[0] != 1:
        fullres = {**plan(target_t, median_shape, dataset_voxels, f"{PLANS_NAME}_3d_fullres"), **shared}
        lowres = lowres_configuration(fullres, median_shape, num_training, plan, f"{preset.plans_name}_3d_lowres")
        if lowres is not None:
            configurations["3d_lowres"] = {**lowres, **shared, "batch_dice": False, "next_stage": "3d_cascade_fullres"}
        configurations["3d_fullres"] = {**fullres, "batch_dice": lowres is not None}
        if lowres is not None:
            configurations["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    return {
        "dataset_name": dataset_name,
        "plans_name": preset.plans_name,
        "original_median_spacing_after_transp": [float(s) for s in np.median(spacings, axis=0)[forward]],
        "original_median_shape_after_transp": [int(round(s)) for s in np.median(shapes, axis=0)[forward]],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": forward,
        "transpose_backward": backward,
        "configurations": configurations,
        "experiment_planner_used": f"segflow {planner} planner (nnU-Net v2 {preset.nnunet_class})",
        "gpu_memory_target_gb": float(gpu_memory_gb),
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": deepcopy(
            fingerprint["foreground_intensity_properties_per_channel"]
        ),
    }


def write_plans(
    fingerprint_path,
    dataset_json_path,
    out,
    gpu_memory_gb: float | None = None,
    dataset_name: str = "",
    planner=DEFAULT_PLANNER,
) -> None:
    from segflow.io import load_json, save_json

    fingerprint, dataset_json = load_json(fingerprint_path), load_json(dataset_json_path)
    save_json(plan_experiment(fingerprint, dataset_json, gpu_memory_gb, dataset_name, planner), out)
