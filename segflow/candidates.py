"""Candidates: what the workflow trains, cross-validates, ensembles and selects among.

A candidate is one configuration of one planner's plans (``plans.json`` for nnU-Net's default planner,
``plans_<planner>.json`` for a preset such as ``resenc_m``) with one network (the planner's own U-Net, or one
of ``segflow.networks.NETWORKS`` in its place: ``plans_<planner>_<network>.json``, or ``plans_<network>.json``
for the default planner). Its name is the configuration's, then ``-<planner>`` for a preset and ``-<network>``
for another network: ``3d_fullres`` (nnU-Net's name, so a run without either keeps its paths),
``3d_fullres-resenc_m``, ``3d_fullres-swinunetr``, ``3d_fullres-resenc_m-segresnet``. The name is the folder of
its folds (``train/<name>/fold_0``), of its cross-validation (``crossval/<name>``), and what ``selection.json``
and ``segflow predict -c`` list.
"""

from __future__ import annotations

from typing import NamedTuple

from segflow.networks import DEFAULT_NETWORK, NETWORKS
from segflow.plan import DEFAULT_PLANNER, PLANNERS, resolved_configuration

SEPARATOR = "-"


class Candidate(NamedTuple):
    configuration: str
    planner: str = DEFAULT_PLANNER
    network: str = DEFAULT_NETWORK

    @property
    def name(self) -> str:
        parts = [self.configuration]
        parts += [self.planner] if self.planner != DEFAULT_PLANNER else []
        parts += [self.network] if self.network != DEFAULT_NETWORK else []
        return SEPARATOR.join(parts)

    @property
    def plans_file(self) -> str:
        return plans_file(self.planner, self.network)

    def with_configuration(self, configuration: str) -> Candidate:
        """The same planner's and network's ``configuration`` (a cascade's previous or next stage)."""
        return self._replace(configuration=configuration)

    def previous_stage(self, plans: dict) -> Candidate | None:
        """The candidate whose predictions a cascade trains and predicts on (``plans``: this candidate's)."""
        previous = resolved_configuration(plans, self.configuration).get("previous_stage")
        return self.with_configuration(previous) if previous else None


def plans_file(planner: str, network: str = DEFAULT_NETWORK) -> str:
    """The plans file of a planner (and network) in the results folder."""
    parts = [p for p, default in ((planner, DEFAULT_PLANNER), (network, DEFAULT_NETWORK)) if p != default]
    return f"plans_{'_'.join(parts)}.json" if parts else "plans.json"


def parse(name: str) -> Candidate:
    """The candidate a name stands for; ValueError for a planner or network segflow does not know."""
    configuration, *rest = name.split(SEPARATOR)
    planner, network = DEFAULT_PLANNER, DEFAULT_NETWORK
    for part in rest:
        if part in PLANNERS and planner == DEFAULT_PLANNER and network == DEFAULT_NETWORK:
            planner = part
        elif part in NETWORKS and network == DEFAULT_NETWORK:
            network = part
        else:
            raise ValueError(
                f"{name!r} is not <configuration>[-<planner>][-<network>]: {part!r} is not one of segflow's "
                f"planners ({', '.join(PLANNERS)}) or networks ({', '.join(NETWORKS)}) in that order"
            )
    return Candidate(configuration, planner, network)
