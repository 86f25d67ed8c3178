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
from segflow.plan import DEFAULT_PLANNER, PLANNERS
from segflow.plans import resolved_configuration

SEPARATOR = "-"
CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")


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


def candidate_pattern(planners: list[str], networks: list[str]) -> str:
    """The regular expression of the candidate names a run of ``planners`` and ``networks`` may have (a rule's
    {candidate} wildcard): a configuration, then ``-<planner>`` for a preset, ``-<network>`` for another network."""
    presets = [p for p in planners if p != DEFAULT_PLANNER]
    others = [n for n in networks if n != DEFAULT_NETWORK]
    return (
        f"({'|'.join(CONFIGURATIONS)})"
        + (f"(-({'|'.join(presets)}))?" if presets else "")
        + (f"(-({'|'.join(others)}))?" if others else "")
    )


def network_plans(planners: list[str], networks: list[str]) -> dict[str, tuple[str, str]]:
    """The plans files of a planner with another network than its own: file stem (``plans_<stem>.json``) ->
    (planner, network)."""
    others = [n for n in networks if n != DEFAULT_NETWORK]
    return {plans_file(p, n)[len("plans_") : -len(".json")]: (p, n) for p in planners for n in others}


def data_folders(planners: list[str]) -> dict[str, Candidate]:
    """The preprocessed data folders of a run and the candidate whose plans make each: the default planner's
    keep the configuration's name (every planner trains on its 2d and 3d_fullres data); a preset's own
    3d_lowres is named by nnU-Net's data identifier."""
    folders = {c: Candidate(c) for c in ("2d", "3d_fullres", "3d_lowres")}
    presets = [p for p in planners if p != DEFAULT_PLANNER]
    folders.update({f"{PLANNERS[p].plans_name}_3d_lowres": Candidate("3d_lowres", p) for p in presets})
    return folders
