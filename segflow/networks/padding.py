"""Networks that take only multiples of their downsampling: the input padded with zeros up to them, every output
cropped back to the input's grid. They then train on nnU-Net's patch size and predict with nnU-Net's sliding
window unchanged."""

from __future__ import annotations

import math

import torch
from torch.nn import functional

from segflow.networks.unet import scaled_size


class PadsToDivisor:
    """Mixin: zero-pads the input up to the network's divisors, crops every output back to the input's grid."""

    def divisors(self) -> list[int]:
        raise NotImplementedError

    def padded_forward(self, x: torch.Tensor):
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        size = x.shape[2:]
        padded = [math.ceil(n / d) * d for n, d in zip(size, self.divisors(), strict=True)]
        pad = []
        for n, p in zip(reversed(size), reversed(padded), strict=True):  # F.pad lists the last axis first
            pad += [0, p - n]
        outputs = self.padded_forward(functional.pad(x, pad) if any(pad) else x)
        if torch.is_tensor(outputs):
            return crop(outputs, size, padded)
        return [crop(o, size, padded) for o in outputs]


def crop(output: torch.Tensor, size, padded) -> torch.Tensor:
    """``output`` (of the padded input, maybe at a lower scale) cut to the input's region."""
    scales = [o / p for o, p in zip(output.shape[2:], padded, strict=True)]
    region = tuple(slice(0, scaled_size(n, s)) for n, s in zip(size, scales, strict=True))
    return output[(..., *region)]
