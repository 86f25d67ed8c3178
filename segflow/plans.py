"""What a plans file says, for everything that reads one (the planner writing it is segflow.plan): a
configuration resolved through ``inherits_from``, the network class it names, and the data folder it trains on.
nnU-Net's plans format (method reference §3), read as nnunetv2's ``ConfigurationManager`` reads it."""

from __future__ import annotations

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
