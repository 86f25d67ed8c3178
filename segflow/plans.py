"""What a plans file says, for everything that reads one (the planner writing it is segflow.plan): a
configuration resolved through ``inherits_from``, the network class it names, and the data folder it trains on.
nnU-Net's plans format (method reference §3), read as nnunetv2's ``ConfigurationManager`` reads it."""

from __future__ import annotations

from dataclasses import dataclass

PLANS_NAME = "nnUNetPlans"


def resolved_configuration(plans: dict, name: str) -> dict:
    """A configuration with ``inherits_from`` applied (the cascade inherits the fullres settings)."""
    configuration = dict(plans["configurations"][name])
    parent = configuration.pop("inherits_from", None)
    if parent is None:
        return configuration
    return {**resolved_configuration(plans, parent), **configuration}


def preprocessed_configurations(plans: dict) -> list[str]:
    """The configurations that own preprocessed data (the cascade reuses 3d_fullres's)."""
    return [name for name, c in plans["configurations"].items() if "inherits_from" not in c]


def data_folder(plans: dict, name: str) -> str:
    """The folder (under ``preprocessed/``) of the data configuration ``name`` trains on: that of the
    configuration owning the data (the cascade trains on 3d_fullres's), named after the configuration where
    the data are the default planner's (nnU-Net's data identifier ``nnUNetPlans_<configuration>``, which the
    presets share for 2d and 3d_fullres), else after the data identifier."""
    owner = plans["configurations"][name].get("inherits_from", name)
    identifier = plans["configurations"][owner]["data_identifier"]
    return owner if identifier == f"{PLANS_NAME}_{owner}" else identifier


def network_class(configuration: dict) -> str:
    """The network class a plans configuration names, without its module path (``PlainConvUNet``, ...)."""
    return configuration["architecture"]["network_class_name"].rsplit(".", 1)[-1]


@dataclass(frozen=True)
class PlanConfiguration:
    """One configuration of a plans file, read once where a job reads its plans and passed down (what nnunetv2's
    ``PlansManager.get_configuration`` gives): ``inherits_from`` resolved, with the plan-wide axis order and
    foreground intensities that preprocessing and export need beside it. ``settings`` is the resolved
    configuration as the plans file spells it (what the network families read)."""

    name: str
    settings: dict
    data_folder: str
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    intensity_properties: dict

    @classmethod
    def of(cls, plans: dict, name: str) -> PlanConfiguration:
        return cls(
            name,
            resolved_configuration(plans, name),
            data_folder(plans, name),
            tuple(plans["transpose_forward"]),
            tuple(plans["transpose_backward"]),
            plans["foreground_intensity_properties_per_channel"],
        )

    @property
    def patch_size(self) -> list[int]:
        return [int(p) for p in self.settings["patch_size"]]

    @property
    def batch_size(self) -> int:
        return int(self.settings["batch_size"])

    @property
    def spacing(self) -> list[float]:
        return [float(s) for s in self.settings["spacing"]]

    @property
    def normalization_schemes(self) -> list[str]:
        return list(self.settings["normalization_schemes"])

    @property
    def use_mask_for_norm(self) -> list[bool]:
        return list(self.settings["use_mask_for_norm"])

    @property
    def batch_dice(self) -> bool:
        return bool(self.settings["batch_dice"])

    @property
    def previous_stage(self) -> str | None:
        return self.settings.get("previous_stage")

    @property
    def data_resampling(self) -> dict:
        """Keywords of ``segflow.resample.resample`` for the image (is_seg, order, order_z, force_separate_z)."""
        return self.settings["resampling_fn_data_kwargs"]

    @property
    def seg_resampling(self) -> dict:
        return self.settings["resampling_fn_seg_kwargs"]

    @property
    def probability_resampling(self) -> dict:
        return self.settings["resampling_fn_probabilities_kwargs"]
