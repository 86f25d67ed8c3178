"""The networks segflow trains: nnU-Net's U-Nets and MONAI's SwinUNETR and SegResNet, on the same plans.

nnU-Net's plans name their network by dynamic_network_architectures' class path; segflow builds those it
knows (``unet``: nnU-Net's PlainConvUNet and ResidualEncoderUNet, with the same parameter names). The config's
``networks`` axis puts another network into a planner's plans (``with_network``): same data, patch, batch and
augmentation, the network and its optimiser recipe replaced (``NETWORKS``, ``recipe_of``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from segflow.plan import network_class, resolved_configuration

if TYPE_CHECKING:
    from torch import nn

# torch is imported only to build a network: the workflow reads this module's names at every Snakemake start
# (and every cluster job's), where importing torch would add seconds.

DEFAULT_NETWORK = "default"


def swinunetr_architecture(configuration: dict) -> dict:
    """nnU-Net Revisited's SwinUNETR: MONAI's class at feature size 48 (its published configuration)."""
    return {
        "network_class_name": "monai.networks.nets.SwinUNETR",
        "arch_kwargs": {
            "feature_size": 48,
            "depths": [2, 2, 2, 2],
            "num_heads": [3, 6, 12, 24],
            "norm_name": "instance",
            "spatial_dims": len(configuration["patch_size"]),
        },
        "_kw_requires_import": [],
    }


def segresnet_architecture(configuration: dict) -> dict:
    """Auto3DSeg's segresnet network: SegResNetDS, 32 initial filters, blocks (1, 2, 2, 4, 4), instance norm,
    4 deep-supervision heads, downsampling adapted to the configuration's spacing."""
    return {
        "network_class_name": "monai.networks.nets.SegResNetDS",
        "arch_kwargs": {
            "init_filters": 32,
            "blocks_down": [1, 2, 2, 4, 4],
            "norm": "INSTANCE",
            "dsdepth": 4,
            "resolution": [float(s) for s in configuration["spacing"]],
            "spatial_dims": len(configuration["patch_size"]),
        },
        "_kw_requires_import": [],
    }


class Recipe(NamedTuple):
    """How a network is optimised: the optimiser, its learning rate schedule, and where the values come from."""

    optimizer: str  # "sgd" (Nesterov) or "adamw"
    initial_lr: float
    weight_decay: float
    schedule: str  # "poly": lr * (1 - epoch / epochs) ** 0.9; "warmup_cosine": linear warmup, cosine to 0
    momentum: float = 0.99  # sgd
    eps: float = 1e-8  # adamw
    warmup_fraction: float = 0.0  # warmup_cosine: the share of the epochs that warm up
    source: str = ""


#: nnU-Net's trainer (method reference §5.2). For its networks the run's train settings may change lr & co.
NNUNET_RECIPE = Recipe("sgd", 1e-2, 3e-5, "poly", source="nnunetv2 nnUNetTrainer")


class Network(NamedTuple):
    """A network of the config's ``networks`` axis: the plans architecture it puts in place of nnU-Net's
    (None: the planner's own) and how it trains."""

    architecture: Callable[[dict], dict] | None
    recipe: Recipe
    description: str


NETWORKS = {
    DEFAULT_NETWORK: Network(None, NNUNET_RECIPE, "the planner's own U-Net (PlainConvUNet or ResidualEncoderUNet)"),
    # nnU-Net Revisited (Isensee et al. 2024) trained SwinUNETR inside nnU-Net with its data pipeline, deep
    # supervision off. Its authors' nnU-Net baseline trainer for it (MIC-DKFZ/MedNeXt,
    # nnUNetTrainerV2_SwinUNETR_128x128x128): AdamW, lr 1e-4, nnU-Net's weight decay 3e-5 and poly schedule,
    # eps 1e-4 (1e-8 gives NaNs in fp16), feature size 48.
    "swinunetr": Network(
        swinunetr_architecture,
        Recipe("adamw", 1e-4, 3e-5, "poly", eps=1e-4, source="MIC-DKFZ/MedNeXt nnUNetTrainerV2_SwinUNETR_128x128x128"),
        "MONAI SwinUNETR, feature size 48",
    ),
    # nnU-Net Revisited ran SegResNet as MONAI Auto3DSeg's segresnet algorithm; its template
    # (Project-MONAI/research-contributions auto3dseg/algorithm_templates/segresnet/configs/hyper_parameters.yaml):
    # AdamW, lr 2e-4, weight decay 1e-5, 3 warmup epochs of 300 then cosine, SegResNetDS as above. segflow keeps
    # nnU-Net's loss, sampling and augmentation for every network, so that only the network differs.
    "segresnet": Network(
        segresnet_architecture,
        Recipe(
            "adamw",
            2e-4,
            1e-5,
            "warmup_cosine",
            warmup_fraction=0.01,
            source="MONAI Auto3DSeg segresnet hyper_parameters.yaml",
        ),
        "MONAI SegResNetDS (Auto3DSeg's segresnet)",
    ),
}


def build_nnunet_unet(
    configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True
) -> nn.Module:
    from segflow.networks import unet

    return unet.build_unet(configuration, in_channels, num_classes, deep_supervision)


def build_monai(configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True) -> nn.Module:
    from segflow.networks import monai_networks

    builder = {"SwinUNETR": monai_networks.build_swinunetr, "SegResNetDS": monai_networks.build_segresnet}
    return builder[network_class(configuration)](configuration, in_channels, num_classes, deep_supervision)


#: The network classes a plans configuration may name, and the builder of each.
BUILDERS = {
    "PlainConvUNet": build_nnunet_unet,
    "ResidualEncoderUNet": build_nnunet_unet,
    "SwinUNETR": build_monai,
    "SegResNetDS": build_monai,
}
NETWORK_OF_CLASS = {"SwinUNETR": "swinunetr", "SegResNetDS": "segresnet"}


def build_network(configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True) -> nn.Module:
    """The network a (resolved) plans configuration describes. Every one has ``output_scales``: the scale of
    each output, highest resolution first (one entry without deep supervision)."""
    name = network_class(configuration)
    if name not in BUILDERS:
        raise ValueError(f"the plans name the network {name!r}; segflow builds {', '.join(BUILDERS)}")
    return BUILDERS[name](configuration, in_channels, num_classes, deep_supervision)


def recipe_of(configuration: dict) -> Recipe:
    """How the network of a (resolved) plans configuration trains."""
    return NETWORKS[NETWORK_OF_CLASS.get(network_class(configuration), DEFAULT_NETWORK)].recipe


def with_network(plans: dict, network: str) -> dict:
    """A planner's plans with ``network`` in place of its U-Net in every configuration that has an
    architecture; data identifiers, patches, batches and spacings stay, so the data are shared."""
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; segflow's networks are {', '.join(NETWORKS)}")
    make = NETWORKS[network].architecture
    if make is None:
        return plans
    planned = copy.deepcopy(plans)
    for name, configuration in planned["configurations"].items():
        if "architecture" in configuration:
            configuration["architecture"] = make(resolved_configuration(plans, name))
    return planned


def write_network_plans(plans_path, network: str, out) -> None:
    from segflow.io import load_json, save_json

    save_json(with_network(load_json(plans_path), network), out)
