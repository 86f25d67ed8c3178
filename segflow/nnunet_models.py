"""nnU-Net v2's trained model folders (``nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIGURATION``): recognised,
read without running any pickle, and turned into segflow models that predict as nnunetv2 would.

A folder holds plans.json, dataset.json and ``fold_K/checkpoint_final.pth`` (``checkpoint_best.pth``) per trained
fold (``fold_all`` for a model trained on every case). Each checkpoint is a dict: ``network_weights`` (the state
dict, named as segflow's networks name theirs), ``init_args`` (its ``configuration`` is the plans configuration the
fold was trained with), ``inference_allowed_mirroring_axes`` and training state that prediction does not need.
"""

from __future__ import annotations

import re
from pathlib import Path

from segflow.errors import InputError
from segflow.infer import Model, model_of
from segflow.io import load_checkpoint, load_json
from segflow.layout import FINAL_CHECKPOINT, Results
from segflow.networks import NETWORKS
from segflow.plans import network_class, resolved_configuration

NNUNET_FINAL_CHECKPOINT = "checkpoint_final.pth"
#: The network classes nnU-Net v2 and segflow both build: an nnU-Net model folder of any other is refused.
NNUNET_NETWORKS = tuple(name for family in NETWORKS.values() for name in family.nnunet_classes)
FOLD_FOLDER = re.compile(r"fold_(\d+|all)$")


def is_nnunet_model_folder(folder) -> bool:
    """Whether ``folder`` is an nnU-Net v2 trained model folder (not a segflow results folder)."""
    folder = Path(folder)
    has_metadata = (folder / "plans.json").is_file() and (folder / "dataset.json").is_file()
    return has_metadata and not (folder / "train").is_dir() and any(folder.glob("fold_*/*.pth"))


def fold_key(name: str) -> int | str:
    return name if name == "all" else int(name)


def trained_folds(folder, checkpoint: str = NNUNET_FINAL_CHECKPOINT) -> list[int | str]:
    """The folds of an nnU-Net model folder that hold ``checkpoint``: numbers in order, then ``all``."""
    found = [FOLD_FOLDER.match(p.parent.name) for p in Path(folder).glob(f"fold_*/{checkpoint}")]
    folds = [fold_key(m.group(1)) for m in found if m]
    return sorted(folds, key=lambda f: (isinstance(f, str), f))


def fold_checkpoints(folder: Path, folds, checkpoint: str) -> list[Path]:
    """The checkpoint file of each fold asked for; a missing one is an error that lists what the folder has."""
    paths = [folder / f"fold_{fold}" / checkpoint for fold in folds]
    for path in paths:
        if not path.is_file():
            available = ", ".join(map(str, trained_folds(folder, checkpoint))) or "none"
            raise InputError(
                "is missing from the nnU-Net model folder.",
                file=path,
                fix=f"choose folds that have {checkpoint} with -f (this folder has: {available}), or another -chk.",
            )
    return paths


def trained_configuration(checkpoints: list[dict], paths: list[Path], plans: dict, plans_path: Path) -> str:
    """The plans configuration the folds were trained with (their ``init_args``), the same for all of them."""
    names = [checkpoint.get("init_args", {}).get("configuration") for checkpoint in checkpoints]
    for name, path in zip(names, paths, strict=True):
        if name != names[0] or not isinstance(name, str):
            raise InputError(
                f"was trained with configuration {name!r}, the first fold with {names[0]!r}.",
                file=path,
                fix="give folds of one model folder with -f; each folder holds one configuration.",
            )
    if names[0] not in plans.get("configurations", {}):
        raise InputError(
            f"has no configuration {names[0]!r}, which its checkpoints were trained with.", file=plans_path
        )
    return names[0]


def check_supported(plans: dict, configuration: str, plans_path: Path) -> None:
    resolved = resolved_configuration(plans, configuration)
    if resolved.get("previous_stage"):
        raise InputError(
            f"configuration {configuration} is a cascade stage, which needs its 3d_lowres predictions; segflow "
            "does not predict nnU-Net cascade model folders yet.",
            file=plans_path,
            fix="predict with the 3d_fullres or 3d_lowres model folder, or train the cascade with segflow.",
        )
    architecture = network_class(resolved)
    if architecture not in NNUNET_NETWORKS:
        raise InputError(
            f"configuration {configuration} uses the network {architecture}, which segflow cannot build.",
            file=plans_path,
            fix=f"segflow predicts nnU-Net v2 models of {' and '.join(NNUNET_NETWORKS)}.",
        )


def load_nnunet_model(folder, folds, checkpoint: str = NNUNET_FINAL_CHECKPOINT) -> Model:
    """The model of an nnU-Net v2 model folder: its plans and dataset.json, the configuration its checkpoints
    were trained with, and the weights of ``folds``."""
    folder = Path(folder)
    paths = fold_checkpoints(folder, folds, checkpoint)
    checkpoints = [load_checkpoint(path) for path in paths]
    plans_path = folder / "plans.json"
    plans = load_json(plans_path)
    configuration = trained_configuration(checkpoints, paths, plans, plans_path)
    check_supported(plans, configuration, plans_path)
    return model_of(plans, load_json(folder / "dataset.json"), configuration, checkpoints)


def member_names(folders) -> list[str]:
    """The names of an ensemble's model folders: their own, or with their parent's where two share one."""
    names = [Path(f).name for f in folders]
    return [f"{Path(f).parent.name}/{n}" if names.count(n) > 1 else n for f, n in zip(folders, names, strict=True)]


def load_nnunet_models(folders, folds, checkpoint: str = NNUNET_FINAL_CHECKPOINT) -> dict[str, Model]:
    """Model per folder (by ``member_names``) of an ensemble of nnU-Net v2 model folders of one dataset: their
    labels must be the same, since their probabilities are averaged."""
    models = {}
    for name, folder in zip(member_names(folders), folders, strict=True):
        model = load_nnunet_model(folder, folds, checkpoint)
        first = next(iter(models.values()), model)
        if model.dataset_json["labels"] != first.dataset_json["labels"]:
            raise InputError(
                f"has labels {model.dataset_json['labels']}, the first model folder {first.dataset_json['labels']}.",
                file=Path(folder) / "dataset.json",
                fix="ensemble model folders of one dataset.",
            )
        models[name] = model
    return models


#: nnU-Net v2's postprocessing function names that segflow applies, and segflow's step for its keyword arguments.
LARGEST_COMPONENT = "remove_all_but_largest_component_from_segmentation"


def nnunet_postprocessing(path) -> list[dict]:
    """segflow's postprocessing steps (segflow/postprocess.py) from the postprocessing.json that nnU-Net's
    find_best_configuration (or nnUNetv2_determine_postprocessing) writes beside its pickle: each step keeps the
    largest component of the union of its labels or regions."""
    from segflow.postprocess import members

    content = load_json(path)
    functions, arguments = content.get("postprocessing_fns"), content.get("postprocessing_kwargs")
    if not isinstance(functions, list) or not isinstance(arguments, list) or len(functions) != len(arguments):
        raise InputError(
            "is not nnU-Net's postprocessing.json (postprocessing_fns and postprocessing_kwargs, one per step).",
            file=path,
            fix="pass the postprocessing.json that nnU-Net wrote beside postprocessing.pkl.",
        )
    steps = []
    for function, kwargs in zip(functions, arguments, strict=True):
        if function != LARGEST_COMPONENT or "labels_or_regions" not in kwargs:
            raise InputError(
                f"names the postprocessing {function}, which segflow does not apply.",
                file=path,
                fix=f"segflow applies nnU-Net's {LARGEST_COMPONENT}; predict without -pp otherwise.",
            )
        steps.append({"labels": sorted({v for item in members(kwargs["labels_or_regions"]) for v in members(item)})})
    return steps


# --- export: a segflow candidate as an nnU-Net v2 model folder ----------------------------------------------

#: The trainer nnunetv2 rebuilds the network with: segflow's U-Nets are nnU-Net's, trained with its recipe.
EXPORT_TRAINER = "nnUNetTrainer"


def exportable_configuration(results: Results, candidate) -> tuple[dict, str]:
    """The plans of a candidate that nnunetv2 can predict with, and its configuration; an error otherwise."""
    plans_path = Path(results.candidate_plans(candidate))
    family = NETWORKS[candidate.network]
    if not family.nnunet_classes:
        raise InputError(
            f"candidate {candidate.name} is {family.description}, which nnU-Net v2 cannot build.",
            file=plans_path,
            fix="export a candidate of nnU-Net's U-Nets (e.g. 3d_fullres or 3d_fullres-resenc_m) with -c.",
        )
    plans = load_json(plans_path)
    check_supported(plans, candidate.configuration, plans_path)
    return plans, candidate.configuration


def nnunet_checkpoint(checkpoint: dict, plans: dict, configuration: str, fold: int | str, dataset_json: dict) -> dict:
    """What nnunetv2 reads from a fold's checkpoint to predict (and to start a training from its weights), from
    a segflow checkpoint: plain values only, so that either side loads it with ``weights_only=True``."""
    return {
        "network_weights": checkpoint["network_weights"],
        "init_args": {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset_json},
        "trainer_name": EXPORT_TRAINER,
        "inference_allowed_mirroring_axes": tuple(checkpoint.get("inference_allowed_mirroring_axes") or ()),
        "current_epoch": checkpoint.get("current_epoch"),
    }


SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def model_folder_name(plans: dict, configuration: str, plans_path) -> str:
    """nnunetv2's model folder name, ``nnUNetTrainer__PLANS__CONFIGURATION``, refused where the plans name or the
    configuration would make it more than one folder (``/``, ``..``) or a hidden one."""
    for what, name in (("plans name", plans.get("plans_name")), ("configuration", configuration)):
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
            raise InputError(
                f"its {what} {name!r} cannot name a folder: it must be letters, digits, '_', '.' and '-', not "
                "starting with '.'.",
                file=plans_path,
                fix=f"correct the {what} in the plans file (nnU-Net's is e.g. nnUNetPlans, 3d_fullres).",
            )
    return f"{EXPORT_TRAINER}__{plans['plans_name']}__{configuration}"


def export_candidate(results, name: str, destination) -> Path:
    """Write candidate ``name`` of a workflow's results folder as ``destination/nnUNetTrainer__PLANS__CONFIGURATION``
    (plans.json, dataset.json, fold_K/checkpoint_final.pth for every trained fold), which ``nnUNetv2_predict``
    and ``segflow predict -m`` accept. Written beside its place and renamed into it: never half a folder."""
    import torch

    from segflow.candidates import parse
    from segflow.io import atomic_folder, save_json

    results = Results(results)
    candidate = parse(name)
    plans, configuration = exportable_configuration(results, candidate)
    dataset_json = load_json(results.dataset_json)
    fold_folders = Path(results.candidate_folds(name))
    folds = trained_folds(fold_folders, FINAL_CHECKPOINT)
    if not folds:
        raise InputError(f"holds no trained fold of {name}.", file=fold_folders)
    folder = Path(destination) / model_folder_name(plans, configuration, Path(results.candidate_plans(candidate)))
    if folder.exists():
        raise InputError("exists already.", file=folder, fix="remove it, or export to another folder with -o.")
    with atomic_folder(folder) as tmp:
        save_json(plans, tmp / "plans.json")
        save_json(dataset_json, tmp / "dataset.json")
        for fold in folds:
            checkpoint = load_checkpoint(results.checkpoint(name, fold))
            (tmp / f"fold_{fold}").mkdir()
            exported = nnunet_checkpoint(checkpoint, plans, configuration, fold, dataset_json)
            torch.save(exported, tmp / f"fold_{fold}" / NNUNET_FINAL_CHECKPOINT)
    return folder
