"""The optimiser of a training run and its learning rate per epoch, from the network's recipe.

nnU-Net's networks train with nnU-Net's SGD recipe, whose values the run's train settings hold (and a bench
may change); other networks with the recipe segflow.networks.NETWORKS gives them. The learning rate is set at
the start of each epoch, as nnU-Net does.
"""

from __future__ import annotations

import math

import torch

from segflow.networks import recipe_of
from segflow.networks.family import NNUNET_RECIPE, Recipe


def training_recipe(configuration: dict, settings) -> Recipe:
    """The recipe of a (resolved) plans configuration's network; nnU-Net's takes lr, weight decay and
    momentum from the train settings."""
    recipe = recipe_of(configuration)
    if recipe is NNUNET_RECIPE:
        return recipe._replace(
            initial_lr=settings.initial_lr, weight_decay=settings.weight_decay, momentum=settings.momentum
        )
    return recipe


def build_optimizer(recipe: Recipe, parameters) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, recipe.initial_lr, momentum=recipe.momentum, nesterov=True, weight_decay=recipe.weight_decay
        )
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(parameters, recipe.initial_lr, weight_decay=recipe.weight_decay, eps=recipe.eps)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r} (sgd or adamw)")


def poly_lr(epoch: int, epochs: int, initial: float = 1e-2, exponent: float = 0.9) -> float:
    return initial * (1 - epoch / epochs) ** exponent


def warmup_cosine_lr(epoch: int, epochs: int, initial: float, warmup_fraction: float) -> float:
    """Linear warmup over the first epochs (at least one), then a cosine from ``initial`` to 0."""
    warmup = max(1, round(warmup_fraction * epochs))
    if epoch < warmup:
        return initial * (epoch + 1) / warmup
    return initial * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))


def learning_rate(recipe: Recipe, epoch: int, epochs: int) -> float:
    if recipe.schedule == "poly":
        return poly_lr(epoch, epochs, recipe.initial_lr)
    if recipe.schedule == "warmup_cosine":
        return warmup_cosine_lr(epoch, epochs, recipe.initial_lr, recipe.warmup_fraction)
    raise ValueError(f"unknown learning rate schedule {recipe.schedule!r} (poly or warmup_cosine)")
