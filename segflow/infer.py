"""Inference (method reference §6): sliding-window prediction of a preprocessed case.

Sliding window: the image is padded with zeros up to the patch size where it is smaller; tiles start at
``round(i * (size - patch) / (n - 1))`` with ``n = ceil((size - patch) / (patch * 0.5)) + 1`` per axis
(2D configurations tile every slice of a volume). Each tile's full-resolution logits, averaged over the
mirrored copies of the tile (every non-empty subset of the mirror axes used in training, flipped back), are
weighted by a Gaussian importance map (sigma = patch / 8, maximum 10, no zeros) and accumulated; the sum
is divided by the summed weights. Folds: logits averaged over the fold models. Accumulation is float32
(nnU-Net accumulates in float16); on CUDA the network runs under fp16 autocast and the accumulators fall
back to CPU memory when the GPU's run short.

The export back to the original geometry is ``export.py``.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import torch

from segflow.device import resolve_device
from segflow.io import load_checkpoint
from segflow.labels import output_channels
from segflow.networks import build_network
from segflow.plans import PlanConfiguration

log = logging.getLogger("segflow.infer")

STEP_SIZE = 0.5
GAUSSIAN_SIGMA_SCALE = 1 / 8
GAUSSIAN_MAX = 10.0


# --- tiles --------------------------------------------------------------------------------------------


def tile_starts(size: int, patch: int, step: float = STEP_SIZE) -> list[int]:
    """Start indices of the tiles along one axis (``size >= patch``)."""
    n = int(np.ceil((size - patch) / (patch * step))) + 1
    if n == 1:
        return [0]
    actual = (size - patch) / (n - 1)
    return [int(np.round(actual * i)) for i in range(n)]


def tile_slicers(shape, patch, step: float = STEP_SIZE) -> list[tuple[slice, ...]]:
    """Spatial slicers of all tiles of an image of ``shape``; a 2D patch on a 3D image tiles every slice,
    and its slicers start with the slice index."""
    if len(patch) == len(shape):
        starts = [tile_starts(s, p, step) for s, p in zip(shape, patch, strict=True)]
        corners = itertools.product(*starts)
        return [tuple(slice(b, b + p) for b, p in zip(corner, patch, strict=True)) for corner in corners]
    in_plane = tile_slicers(shape[1:], patch, step)
    return [(z, *tile) for z in range(shape[0]) for tile in in_plane]


def padding_for(shape, patch) -> list[tuple[int, int]]:
    """(below, above) zero padding per spatial axis that makes the image at least as large as the patch."""
    pads = [(0, 0)] * (len(shape) - len(patch))
    for size, p in zip(shape[len(shape) - len(patch) :], patch, strict=True):
        missing = max(p - size, 0)
        pads.append((missing // 2, missing - missing // 2))
    return pads


def gaussian_importance(patch, device=None) -> torch.Tensor:
    """nnU-Net's tile weights: a Gaussian (sigma = patch / 8) centred at ``patch // 2``, maximum 10,
    zeros replaced by the smallest positive value."""
    from scipy.ndimage import gaussian_filter

    delta = np.zeros(patch, dtype=np.float64)
    delta[tuple(p // 2 for p in patch)] = 1
    weights = gaussian_filter(delta, [p * GAUSSIAN_SIGMA_SCALE for p in patch], 0, mode="constant", cval=0)
    weights = weights / weights.max() * GAUSSIAN_MAX
    weights[weights == 0] = weights[weights > 0].min()
    return torch.as_tensor(weights.astype(np.float32), device=device)


def mirror_combinations(axes) -> list[tuple[int, ...]]:
    """The identity and every non-empty subset of the mirror axes, as tensor dims of a B x C x ... tile."""
    dims = [a + 2 for a in axes]
    return [()] + [c for r in range(1, len(dims) + 1) for c in itertools.combinations(dims, r)]


# --- models -----------------------------------------------------------------------------------------------


@dataclass
class Model:
    """One configuration of a trained dataset: the plan, its fold weights and how to run them."""

    configuration: PlanConfiguration
    dataset_json: dict
    fold_weights: list[dict]
    mirror_axes: tuple[int, ...]

    @property
    def patch_size(self) -> list[int]:
        return self.configuration.patch_size


def load_model(plans: dict, dataset_json: dict, configuration: str, checkpoints) -> Model:
    """A configuration of the plans with the weights of the given fold checkpoints
    (``torch.load(weights_only=True)``)."""
    if not checkpoints:
        raise ValueError(f"no checkpoints given for {configuration}")
    loaded = [load_checkpoint(path, mapped=True) for path in checkpoints]
    return model_of(plans, dataset_json, configuration, loaded)


def model_of(plans: dict, dataset_json: dict, configuration: str, checkpoints: list[dict]) -> Model:
    """A configuration with its folds' loaded checkpoints (segflow's or nnU-Net v2's: the same two keys); the
    mirror axes of test-time augmentation are the first fold's."""
    weights = [checkpoint["network_weights"] for checkpoint in checkpoints]
    mirror_axes = tuple(checkpoints[0].get("inference_allowed_mirroring_axes") or ())
    return Model(PlanConfiguration.of(plans, configuration), dataset_json, weights, mirror_axes)


def previous_stage_labels(model: Model) -> list[int]:
    """The labels a cascade configuration gets the previous stage's segmentation of, as extra channels."""
    from segflow.train.cascade import foreground_labels

    if not model.configuration.previous_stage:
        return []
    return foreground_labels(model.dataset_json["labels"])


def with_previous_stage(data: np.ndarray, segmentation: np.ndarray, labels) -> np.ndarray:
    """Data with the one-hot channels of a 1 x ... previous-stage segmentation (on the same grid) appended."""
    from segflow.train.cascade import one_hot

    return np.concatenate([np.asarray(data, dtype=np.float32), one_hot(segmentation[0], labels)])


@dataclass(frozen=True)
class SlidingWindow:
    """How a case is tiled: the step between tiles as a fraction of the patch (nnU-Net's ``-step_size``), and
    whether each tile is also predicted mirrored along the axes the training mirrored (test-time augmentation)."""

    step: float = STEP_SIZE
    mirror: bool = True


#: nnU-Net's: tiles overlapping by half, every tile also predicted mirrored.
DEFAULT_WINDOW = SlidingWindow()


class Predictor:
    """Sliding-window logits of preprocessed cases for one model (all its folds). ``network`` replaces the
    plans' U-Net (tests use an oracle)."""

    def __init__(self, model: Model, device: str = "auto", window: SlidingWindow = DEFAULT_WINDOW, network=None):
        self.model = model
        self.device = resolve_device(device)
        self.step = window.step
        num_outputs = len(output_channels(model.dataset_json["labels"]))
        if network is None:
            in_channels = len(model.dataset_json["channel_names"]) + len(previous_stage_labels(model))
            network = build_network(model.configuration.settings, in_channels, num_outputs, deep_supervision=False)
        self.network = network.to(self.device).eval()
        self.num_outputs = num_outputs
        self.patch = model.patch_size
        self.gaussian = gaussian_importance(self.patch, self.device)
        self.combinations = mirror_combinations(model.mirror_axes if window.mirror else ())

    def mirrored_outputs(self, tile: torch.Tensor):
        """(mirror dims, the network's output for the tile flipped along them) per combination. On a GPU the
        copies run as one batch; on a CPU one at a time, as the caller asks for each, which is faster there
        (measured: 8 x batch 1 took 0.79 of batch 8) and keeps one copy's input and output in memory, not eight."""
        if self.device.type == "cuda":
            copies = [torch.flip(tile, dims) if dims else tile for dims in self.combinations]
            yield from zip(self.combinations, self.network(torch.cat(copies)).float(), strict=True)
        else:
            for dims in self.combinations:
                yield dims, self.network(torch.flip(tile, dims) if dims else tile)[0]

    def tile_logits(self, tile: torch.Tensor) -> torch.Tensor:
        """Logits of a 1 x C x patch tile, averaged over its mirrored copies, each flipped back and added as it
        comes."""
        total = None
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            for dims, out in self.mirrored_outputs(tile):
                if total is None:
                    total = torch.zeros_like(out)
                total += torch.flip(out, [d - 1 for d in dims]) if dims else out
                del out  # before the next copy's forward pass
        return total / len(self.combinations)

    def accumulators(self, shape) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            logits = torch.zeros((self.num_outputs, *shape), dtype=torch.float32, device=self.device)
            weights = torch.zeros(shape, dtype=torch.float32, device=self.device)
        except torch.OutOfMemoryError:
            log.warning("GPU memory short: accumulating %s on the CPU", list(shape))
            logits = torch.zeros((self.num_outputs, *shape), dtype=torch.float32)
            weights = torch.zeros(shape, dtype=torch.float32)
        return logits, weights

    @torch.inference_mode()
    def sliding_window(self, data: np.ndarray) -> torch.Tensor:
        """K x Z x Y x X logits (float32, CPU) of one C x Z x Y x X preprocessed case with the current weights."""
        pads = padding_for(data.shape[1:], self.patch)
        padded = np.pad(data, [(0, 0), *pads], constant_values=0) if any(sum(p) for p in pads) else data
        # Writable: torch warns about (and cannot share) a read-only, memory-mapped array.
        image = torch.from_numpy(np.require(padded, np.float32, ["C", "W"])).to(self.device)
        logits, weights = self.accumulators(image.shape[1:])
        gaussian = self.gaussian.to(logits.device)
        for slicer in tile_slicers(image.shape[1:], self.patch, self.step):
            tile = image[(slice(None), *slicer)][None]
            prediction = self.tile_logits(tile).to(logits.device)
            logits[(slice(None), *slicer)] += prediction.mul_(gaussian)  # in place: one tile's array less
            weights[slicer] += gaussian
        logits /= weights
        unpad = tuple(slice(below, size - above) for (below, above), size in zip(pads, image.shape[1:], strict=True))
        return logits[(slice(None), *unpad)].cpu()

    @torch.inference_mode()
    def predict(self, data: np.ndarray) -> np.ndarray:
        """Logits of a preprocessed case averaged over the model's folds."""
        total = None
        for weights in self.model.fold_weights:
            self.network.load_state_dict(weights)
            logits = self.sliding_window(data)
            if total is None:
                total = logits
            else:
                total += logits
                del logits
        if len(self.model.fold_weights) > 1:
            total /= len(self.model.fold_weights)
        return total.numpy()
