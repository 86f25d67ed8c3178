"""The networks segflow trains: nnU-Net's U-Nets and MONAI's SwinUNETR and SegResNet, on the same plans.

nnU-Net's plans name their network by dynamic_network_architectures' class path; segflow builds the classes its
network families know (``NETWORKS``, one module each in ``segflow.networks.families``), and runs no code a plans
file names, so a stranger's model folder cannot run code. The config's ``networks`` axis puts another family's
network into a planner's plans (``with_network``): same data, patch, batch and augmentation, the network and its
optimiser recipe replaced. Everything else asks the family of a configuration (``family_of``): its size, its
activations, its padded input, its recipe and its builder.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from segflow.networks.families.mednext import FAMILY as MEDNEXT
from segflow.networks.families.segresnet import FAMILY as SEGRESNET
from segflow.networks.families.swinunetr import FAMILY as SWINUNETR
from segflow.networks.families.unet import FAMILY as UNETS
from segflow.networks.family import Family, Recipe
from segflow.plans import network_class, resolved_configuration

if TYPE_CHECKING:
    from torch import nn

#: The network families by their name in the config's ``networks`` (the first: the planners' own).
NETWORKS: dict[str, Family] = {f.name: f for f in (UNETS, SWINUNETR, SEGRESNET, MEDNEXT)}
DEFAULT_NETWORK = UNETS.name
FAMILY_OF_CLASS = {name: family for family in NETWORKS.values() for name in family.classes}


def family_of(configuration: dict) -> Family:
    """The family of the network a (resolved) plans configuration names."""
    name = network_class(configuration)
    if name not in FAMILY_OF_CLASS:
        raise ValueError(f"the plans name the network {name!r}; segflow builds {', '.join(FAMILY_OF_CLASS)}")
    return FAMILY_OF_CLASS[name]


def build_network(configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True) -> nn.Module:
    """The network a (resolved) plans configuration describes. Every one has ``output_scales``: the scale of
    each output, highest resolution first (one entry without deep supervision)."""
    return family_of(configuration).build(configuration, in_channels, num_classes, deep_supervision)


def recipe_of(configuration: dict) -> Recipe:
    """How the network of a (resolved) plans configuration trains."""
    return family_of(configuration).recipe


def parameter_count(configuration: dict, in_channels: int, num_classes: int) -> int:
    """Trainable parameters of the network a (resolved) plans configuration describes, without building it."""
    return family_of(configuration).parameters(configuration, in_channels, num_classes)


def padded_patch(configuration: dict) -> list[int]:
    """The input size a patch becomes inside the network (MONAI's pad it to what their downsampling divides)."""
    return family_of(configuration).padded_patch(configuration)


def sample_activations(configuration: dict, num_classes: int) -> int:
    """What training keeps of one sample, in convolution outputs of a U-Net (the planner's VRAM proxy)."""
    return family_of(configuration).activations(configuration, num_classes)


def with_network(plans: dict, network: str) -> dict:
    """A planner's plans with ``network`` in place of its U-Net in every configuration that has an
    architecture; data identifiers, patches, batches and spacings stay, so the data are shared."""
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; segflow's networks are {', '.join(NETWORKS)}")
    replaced = {
        name: NETWORKS[network].architecture(resolved_configuration(plans, name))
        for name, configuration in plans["configurations"].items()
        if "architecture" in configuration
    }
    if not any(replaced.values()):
        return plans
    planned = copy.deepcopy(plans)
    for name, architecture in replaced.items():
        planned["configurations"][name]["architecture"] = architecture
    return planned


def write_network_plans(plans_path, network: str, out) -> None:
    from segflow.io import load_json, save_json

    save_json(with_network(load_json(plans_path), network), out)
