"""What segflow knows of a network family, in one object: how it enters a plan, its size without building it, how
it trains and how it is built.

A family module (``segflow/networks/families/<family>.py``) subclasses ``Family`` and is listed once in
``segflow.networks.NETWORKS``; the planner, the job resources, the trainer, the exporter and inference ask the
family, none of them names a network. A family module imports neither torch nor MONAI at import time (the workflow
reads the families at every Snakemake start, where that would cost seconds): ``build`` imports the module that
holds the network's torch code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from torch import nn

#: On a CPU, copies of the convolution outputs that training keeps (activations for the backward pass,
#: normalisation and nonlinearity outputs, gradients). Prostate: (11.1 GB - 1.1 GB) / 3.6 GB = 2.8. A family's
#: ``activations`` are in these units: a network whose own measure is what it keeps divides it by this.
ACTIVATION_COPIES = 3.0


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


def arch_kwargs(configuration: dict) -> dict:
    return configuration["architecture"]["arch_kwargs"]


class Family:
    """A network family. ``name``: its value in the config's ``networks``; ``classes``: the plans' network class
    names (``network_class_name`` without its module) it builds; ``nnunet_classes``: those of them nnU-Net v2
    builds too (its model folders are predicted, and candidates exported for nnunetv2)."""

    name: str
    classes: tuple[str, ...]
    nnunet_classes: tuple[str, ...] = ()
    recipe: Recipe
    description: str

    def architecture(self, configuration: dict) -> dict | None:
        """The plans ``architecture`` the family puts in place of the planner's U-Net in a (resolved)
        configuration; None: the planner's own stays (nnU-Net's U-Nets)."""
        raise NotImplementedError

    def parameters(self, configuration: dict, in_channels: int, num_classes: int) -> int:
        """Trainable parameters, counted from the configuration as the builder lays them out."""
        raise NotImplementedError

    def activations(self, configuration: dict, num_classes: int) -> int:
        """What training keeps of one sample, in convolution outputs of a U-Net (``ACTIVATION_COPIES``)."""
        raise NotImplementedError

    def padded_patch(self, configuration: dict) -> list[int]:
        """The input size a patch becomes inside the network (the patch, unless the network pads it)."""
        return [int(p) for p in configuration["patch_size"]]

    def build(
        self, configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True
    ) -> nn.Module:
        """The network, with ``output_scales``: the scale of each output, highest resolution first."""
        raise NotImplementedError
