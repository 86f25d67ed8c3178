"""The networks segflow trains, by the name a plans configuration gives them.

nnU-Net's plans name their network by dynamic_network_architectures' class path; segflow builds those it
knows (``unet``: nnU-Net's PlainConvUNet and ResidualEncoderUNet) with the same parameter names.
"""

from __future__ import annotations

from torch import nn

from segflow.networks.unet import build_unet
from segflow.plan import network_class

#: The network classes nnU-Net's plans may name, and the builder of each.
NNUNET_NETWORKS = {"PlainConvUNet": build_unet, "ResidualEncoderUNet": build_unet}


def build_network(configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True) -> nn.Module:
    """The network a (resolved) plans configuration describes."""
    name = network_class(configuration)
    if name not in NNUNET_NETWORKS:
        raise ValueError(f"the plans name the network {name!r}; segflow builds {', '.join(NNUNET_NETWORKS)}")
    return NNUNET_NETWORKS[name](configuration, in_channels, num_classes, deep_supervision)
