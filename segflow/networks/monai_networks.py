"""MONAI's SwinUNETR and SegResNet on nnU-Net's plans: same data, same patches, same batches.

A plans configuration names them as nnU-Net names its own networks (``network_class_name``, ``arch_kwargs``),
so a candidate of these networks is an ordinary plans file (``segflow.networks.with_network``). The classes
here are MONAI's with one change: an input whose size the network cannot take (SwinUNETR needs multiples of
32, SegResNetDS of ``2**levels`` per axis) is padded with zeros at the end of each axis and the output cropped
back, so they train on nnU-Net's patch size and predict with nnU-Net's sliding window unchanged. Their state
dicts are MONAI's: a checkpoint's weights load into ``monai.networks.nets.SwinUNETR`` / ``SegResNetDS``.
Importing monai takes seconds, so segflow.networks imports this module only to build one of them.
"""

from __future__ import annotations

from monai.networks.nets import SegResNetDS, SwinUNETR

from segflow.networks.padding import PadsToDivisor


class PaddedSwinUNETR(PadsToDivisor, SwinUNETR):
    """SwinUNETR (Hatamizadeh et al. 2022): a Swin transformer encoder, a convolutional decoder; no deep
    supervision (one full-resolution output)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deep_supervision = False

    def divisors(self) -> list[int]:
        return [self.patch_size**5] * len(self.swinViT.window_size)

    def padded_forward(self, x):
        return SwinUNETR.forward(self, x)

    @property
    def output_scales(self) -> list[list[float]]:
        return [[1.0] * len(self.swinViT.window_size)]


class PaddedSegResNetDS(PadsToDivisor, SegResNetDS):
    """SegResNetDS (Myronenko 2018, MONAI Auto3DSeg's segresnet): a residual encoder whose downsampling adapts
    to anisotropic spacing (``resolution``), and ``dsdepth`` deep-supervision heads."""

    def __init__(self, *args, deep_supervision: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.deep_supervision = deep_supervision

    def divisors(self) -> list[int]:
        return [int(d) for d in self.shape_factor()]

    def padded_forward(self, x):
        # MONAI returns the deep-supervision outputs only in training mode; segflow's trainer wants them for its
        # validation loss too (as nnU-Net's U-Net gives them), and prediction never. Only this module's own
        # flag decides that, so it stands in for deep_supervision during the call.
        training = self.training
        self.training = self.deep_supervision
        try:
            return self._forward(x)
        finally:
            self.training = training

    @property
    def output_scales(self) -> list[list[float]]:
        dim = self.spatial_dims
        steps = self.anisotropic_scales or [[2] * dim] * (len(self.blocks_down) - 1)
        scales, scale = [], [1.0] * dim
        for level in range(self.dsdepth if self.deep_supervision else 1):
            scales.append(list(scale))
            scale = [float(s / f) for s, f in zip(scale, steps[level], strict=True)]
        return scales


def build_swinunetr(configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True):
    kwargs = configuration["architecture"]["arch_kwargs"]
    return PaddedSwinUNETR(in_channels=in_channels, out_channels=num_classes, **kwargs)


def build_segresnet(configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True):
    kwargs = dict(configuration["architecture"]["arch_kwargs"])
    kwargs["blocks_down"] = tuple(kwargs["blocks_down"])
    if kwargs.get("resolution") is not None:
        kwargs["resolution"] = tuple(kwargs["resolution"])
    return PaddedSegResNetDS(
        in_channels=in_channels, out_channels=num_classes, deep_supervision=deep_supervision, **kwargs
    )
