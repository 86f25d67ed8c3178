"""Candidates: what the workflow trains, cross-validates, ensembles and selects among.

A candidate is one configuration of one planner's plans (``plans.json`` for nnU-Net's default planner,
``plans_<planner>.json`` for a preset such as ``resenc_m``). Its name is the configuration's for the default
planner, so a run without presets keeps nnU-Net's names (``3d_fullres``), and ``<configuration>-<planner>``
otherwise (``3d_fullres-resenc_m``). The name is the folder of its folds (``train/<name>/fold_0``), of its
cross-validation (``crossval/<name>``), and what ``selection.json`` and ``segflow predict -c`` list.
"""

from __future__ import annotations

from typing import NamedTuple

from segflow.plan import PLANNERS

DEFAULT_PLANNER = "default"
SEPARATOR = "-"


class Candidate(NamedTuple):
    configuration: str
    planner: str = DEFAULT_PLANNER

    @property
    def name(self) -> str:
        if self.planner == DEFAULT_PLANNER:
            return self.configuration
        return f"{self.configuration}{SEPARATOR}{self.planner}"

    @property
    def plans_file(self) -> str:
        return plans_file(self.planner)

    def with_configuration(self, configuration: str) -> Candidate:
        """The same planner's ``configuration`` (a cascade's previous or next stage)."""
        return self._replace(configuration=configuration)


def plans_file(planner: str) -> str:
    """The file a planner writes into the results folder."""
    return "plans.json" if planner == DEFAULT_PLANNER else f"plans_{planner}.json"


def parse(name: str) -> Candidate:
    """The candidate a name stands for; ValueError for a planner segflow does not know."""
    configuration, _, planner = name.partition(SEPARATOR)
    planner = planner or DEFAULT_PLANNER
    if planner not in PLANNERS:
        raise ValueError(f"{name!r} names the planner {planner!r}; segflow's planners are {', '.join(PLANNERS)}")
    return Candidate(configuration, planner)
