"""nnU-Net's U-Nets, the planners' own networks: PlainConvUNet (the default planner) and ResidualEncoderUNet
(the residual-encoder presets), built by ``segflow.networks.unet`` with nnU-Net's parameter names."""

from __future__ import annotations

from segflow.networks.family import NNUNET_RECIPE, Family, arch_kwargs
from segflow.networks.sizes import conv, conv_norm, residual_blocks, stacked_convs
from segflow.plan import conv_feature_map_size, residual_feature_map_size
from segflow.plans import network_class

RESIDUAL = "ResidualEncoderUNet"


def unet_parameters(kwargs: dict, residual: bool, in_channels: int, num_classes: int) -> int:
    """nnU-Net's PlainConvUNet or ResidualEncoderUNet (segflow.networks.unet)."""
    features, kernels, strides = kwargs["features_per_stage"], kwargs["kernel_sizes"], kwargs["strides"]
    dim, count = len(kernels[0]), 0
    if residual:
        count += conv_norm(in_channels, features[0], kernels[0])
        channels, per_stage, stage = features[0], kwargs["n_blocks_per_stage"], residual_blocks
    else:
        channels, per_stage, stage = in_channels, kwargs["n_conv_per_stage"], stacked_convs
    for n, width, kernel in zip(per_stage, features, kernels, strict=True):
        count += stage(n, channels, width, kernel)
        channels = width
    for s in range(len(features) - 2, -1, -1):
        count += conv(features[s + 1], features[s], strides[s + 1])
        count += stacked_convs(
            kwargs["n_conv_per_stage_decoder"][len(features) - 2 - s], 2 * features[s], features[s], kernels[s]
        )
        count += conv(features[s], num_classes, [1] * dim)
    return count


class UNets(Family):
    name = "default"
    classes = ("PlainConvUNet", RESIDUAL)
    nnunet_classes = classes
    recipe = NNUNET_RECIPE
    description = "the planner's own U-Net (PlainConvUNet or ResidualEncoderUNet)"

    def architecture(self, configuration: dict) -> None:
        return None

    def parameters(self, configuration: dict, in_channels: int, num_classes: int) -> int:
        residual = network_class(configuration) == RESIDUAL
        return unet_parameters(arch_kwargs(configuration), residual, in_channels, num_classes)

    def activations(self, configuration: dict, num_classes: int) -> int:
        """The planner's VRAM proxy: every convolution output of one sample."""
        kwargs, patch = arch_kwargs(configuration), configuration["patch_size"]
        if network_class(configuration) == RESIDUAL:
            return residual_feature_map_size(
                patch, kwargs["strides"], kwargs["features_per_stage"], num_classes, kwargs["n_blocks_per_stage"]
            )
        return conv_feature_map_size(patch, kwargs["strides"], kwargs["features_per_stage"], num_classes)

    def build(self, configuration: dict, in_channels: int, num_classes: int, deep_supervision: bool = True):
        from segflow.networks.unet import build_unet

        return build_unet(configuration, in_channels, num_classes, deep_supervision)


FAMILY = UNets()
