"""What a user's dataset folder holds, found at workflow parse time: its kind, cases and files.

Two layouts are accepted (method reference §1):

* an MSD ``TaskNN_Name`` folder (v1 ``dataset.json`` with ``modality`` and int->name ``labels``; one
  file per case, 3D or 4D, no channel suffix; macOS ``._*`` junk ignored), which ``convert`` turns into
  the v2 raw layout;
* an nnU-Net v2 raw folder (``channel_names``, name->int ``labels``, ``file_ending``; channel files
  ``CASE_XXXX{ending}``), used as it is.

Everything that can be checked without reading pixels is checked here, so that a dataset with a missing
file or an inconsistent ``dataset.json`` fails before any job starts: required keys, consecutive labels,
``numTraining`` against the cases found, a label file and every channel file for each case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from segflow.errors import InputError
from segflow.io import CHANNEL_SUFFIX, is_natural_image, load_json

REQUIRED_V2_KEYS = ("labels", "channel_names", "numTraining", "file_ending")


@dataclass(frozen=True)
class Dataset:
    """A training dataset as the workflow sees it before any job has run."""

    root: Path
    kind: str  # "msd" (needs conversion) or "raw" (nnU-Net v2 raw folder, used in place)
    dataset_json: dict  # always the v2 form
    cases: list[str]
    sources: dict[str, list[Path]] = field(repr=False)  # case -> source image files (MSD: one file)
    label_sources: dict[str, Path] = field(repr=False)
    test_sources: dict[str, list[Path]] = field(default_factory=dict, repr=False)  # imagesTs, if any

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def num_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]


def label_values(dataset_json: dict) -> set[int]:
    """Every label value a label map may hold: the plain labels, the members of regions, the ignore label."""
    values = set()
    for value in dataset_json["labels"].values():
        values.update(value if isinstance(value, (list, tuple)) else [value])
    return values


def check_labels(dataset_json: dict, file) -> None:
    """Background must be 0 and the label values (ignore label included) consecutive from 0."""
    labels = dataset_json["labels"]
    if labels.get("background") != 0:
        raise InputError(
            f"labels must contain 'background': 0, got {labels}.",
            file=file,
            fix='add "background": 0 to the labels of dataset.json.',
        )
    values = sorted(label_values(dataset_json))
    if values != list(range(len(values))):
        raise InputError(
            f"label values must be consecutive integers 0, 1, 2, ...; got {values}.",
            file=file,
            fix="renumber the labels in dataset.json and in every label file so that no value is skipped.",
        )


def with_labels(dataset_json: dict, labels: dict | None, regions_class_order=None) -> dict:
    """dataset.json with its labels replaced (the config's way to train regions on an MSD task)."""
    if not labels:
        return dataset_json
    out = {**dataset_json, "labels": dict(labels)}
    if regions_class_order:
        out["regions_class_order"] = list(regions_class_order)
    return out


def v1_to_v2_dataset_json(v1: dict) -> dict:
    """The MSD (nnU-Net v1) dataset.json in v2 form: inverted labels, channel_names, file_ending."""
    v2 = {k: v for k, v in v1.items() if k not in ("tensorImageSize", "numTest", "training", "test", "modality")}
    v2["channel_names"] = {str(k): v for k, v in v1["modality"].items()}
    v2["labels"] = {name: int(value) for value, name in v1["labels"].items()}
    v2["file_ending"] = ".nii.gz"
    return v2


def _visible(path: Path) -> bool:
    return not path.name.startswith((".", "_"))


def _images(folder: Path, ending: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _visible(p) and p.name.endswith(ending))


def _file_names(folder: Path, ending: str) -> set[str]:
    """The names in ``folder`` that end in ``ending``: one listing, not a stat per case, which on a cluster's
    file system is what every Snakemake start (each job's too) would otherwise pay per case."""
    return {p.name for p in _images(folder, ending)}


def _require_folder(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise InputError(
            f"the folder {what} is missing.",
            file=folder,
            fix=f"put the {what} files into {folder}.",
        )


def _check_num_training(dataset_json: dict, cases: list[str], file) -> None:
    if dataset_json.get("numTraining") != len(cases):
        raise InputError(
            f"numTraining is {dataset_json.get('numTraining')} but imagesTr holds {len(cases)} cases.",
            file=file,
            fix=f'set "numTraining": {len(cases)} in dataset.json, or add/remove the cases that differ.',
        )


def _missing_label_error(case: str, path: Path) -> InputError:
    return InputError(
        "has images but no label file.",
        file=path,
        case=case,
        fix=f"add the label map {path.name} to labelsTr, or remove the case's images from imagesTr.",
    )


def _check_training_list(entries, root: Path) -> None:
    """An MSD dataset.json's ``training`` list: every path stays inside imagesTr/labelsTr, no case twice.
    (Cases are discovered from the files; the list must not contradict them.)"""
    file, seen = root / "dataset.json", set()
    for number, entry in enumerate(entries):
        for key, folder in (("image", "imagesTr"), ("label", "labelsTr")):
            # By the path as written, not where a symbolic link points: data linked from shared storage is fine.
            path = Path(os.path.normpath(root / str(entry.get(key, ""))))
            if path.parent != Path(os.path.normpath(root / folder)):
                raise InputError(
                    f"training entry {number} has {key} {entry.get(key)!r}, which is not a file in {folder}/.",
                    file=file,
                    fix=f"list each case as ./{folder}/CASE.nii.gz (no '..', no other folders).",
                )
        case = Path(str(entry["image"])).name.removesuffix(".nii.gz")
        if case in seen:
            raise InputError(f"lists case {case!r} twice in training.", file=file, fix="remove the duplicate entry.")
        seen.add(case)


def _check_msd_file_endings(root: Path) -> None:
    """The MSD layout is NIfTI only; files of other formats would otherwise be ignored without a word."""
    for folder in ("imagesTr", "labelsTr"):
        others = sorted(p.name for p in (root / folder).iterdir() if _visible(p) and not p.name.endswith(".nii.gz"))
        if others:
            raise InputError(
                f"holds {len(others)} files that are not .nii.gz (e.g. {others[0]}); an MSD Task folder "
                "(dataset.json in the Decathlon's form, with `modality` and `training`) is read as .nii.gz only.",
                file=root / folder,
                fix="convert the files to .nii.gz, or lay the dataset out as an nnU-Net v2 raw folder, which reads "
                "NIfTI, NRRD and MHA: dataset.json with channel_names, labels, numTraining and file_ending (e.g. "
                '".nrrd"), images as imagesTr/CASE_0000.nrrd, labels as labelsTr/CASE.nrrd.',
            )


def discover_msd(root: Path, raw: dict) -> Dataset:
    v2 = v1_to_v2_dataset_json(raw)
    check_labels(v2, root / "dataset.json")
    _require_folder(root / "imagesTr", "imagesTr")
    _require_folder(root / "labelsTr", "labelsTr")
    _check_msd_file_endings(root)
    images = _images(root / "imagesTr", ".nii.gz")
    cases = sorted(p.name[: -len(".nii.gz")] for p in images)
    _check_training_list(raw.get("training", []), root)
    _check_num_training(v2, cases, root / "dataset.json")
    sources, labels = {}, {}
    present = _file_names(root / "labelsTr", ".nii.gz")
    for case in cases:
        label = root / "labelsTr" / f"{case}.nii.gz"
        if label.name not in present:
            raise _missing_label_error(case, label)
        sources[case] = [root / "imagesTr" / f"{case}.nii.gz"]
        labels[case] = label
    return Dataset(root, "msd", v2, cases, sources, labels, images_to_predict(root / "imagesTs", "msd", v2))


def discover_raw(root: Path, dataset_json: dict) -> Dataset:
    file = root / "dataset.json"
    missing = [k for k in REQUIRED_V2_KEYS if k not in dataset_json]
    if missing:
        raise InputError(
            f"dataset.json lacks the required keys {missing}.",
            file=file,
            fix="add them (see nnU-Net's dataset format: labels, channel_names, numTraining, file_ending).",
        )
    check_labels(dataset_json, file)
    check_reader(dataset_json, file)
    ending = dataset_json["file_ending"]
    if "dataset" in dataset_json:
        raise InputError(
            "lists the cases' files under 'dataset' (nnU-Net's alternative to the imagesTr/labelsTr folders), "
            "which segflow does not read.",
            file=file,
            fix=f"link the files into imagesTr/ as CASE_XXXX{ending} and labelsTr/ as CASE{ending} (symbolic links "
            "are accepted) and remove the 'dataset' key.",
        )
    _require_folder(root / "imagesTr", "imagesTr")
    _require_folder(root / "labelsTr", "labelsTr")
    channels_of = channel_files(root / "imagesTr", ending)
    cases = sorted(channels_of)
    _check_num_training(dataset_json, cases, file)
    n_channels = len(dataset_json["channel_names"])
    sources, labels = {}, {}
    present = _file_names(root / "labelsTr", ending)
    for case in cases:
        label = root / "labelsTr" / f"{case}{ending}"
        if label.name not in present:
            raise _missing_label_error(case, label)
        sources[case] = checked_channels(case, channels_of[case], n_channels, root / "imagesTr", ending)
        labels[case] = label
    return Dataset(
        root, "raw", dataset_json, cases, sources, labels, images_to_predict(root / "imagesTs", "raw", dataset_json)
    )


# nnU-Net's readers (dataset.json's overwrite_image_reader_writer) that segflow reads as (segflow.io), and those
# that read otherwise, with what each one changes.
SAME_READERS = ("SimpleITKIO", "NaturalImage2DIO", "Tiff3DIO")
OTHER_READERS = {
    "NibabelIO": "reads NIfTI headers with nibabel, whose affine can differ from SimpleITK's",
    "NibabelIOWithReorient": "reorients every image to RAS before training",
}


def check_reader(dataset_json: dict, file: Path) -> None:
    """A reader that segflow does not reproduce stops the run, rather than training on other arrays or
    spacings than nnU-Net would without a word."""
    reader = dataset_json.get("overwrite_image_reader_writer")
    if reader is None or reader in SAME_READERS:
        return
    what = OTHER_READERS.get(reader, "is not one of nnU-Net's readers segflow knows")
    raise InputError(
        f"asks for nnU-Net's reader {reader} (overwrite_image_reader_writer), which {what}; segflow reads "
        "images as nnU-Net's SimpleITKIO does (NaturalImage2DIO for 2D .png, .bmp, .tif; Tiff3DIO for 3D .tif).",
        file=file,
        fix="remove overwrite_image_reader_writer to read the images with SimpleITK, or convert them to NIfTI "
        "with the orientation and spacing you want.",
    )


def images_to_predict(folder, kind: str, dataset_json: dict) -> dict[str, list[Path]]:
    """Images to predict in ``folder``, laid out like the dataset's training images: an MSD task's one file
    per case (converted before prediction), or a raw folder's ``CASE_XXXX`` channel files. Case -> files."""
    folder = Path(folder)
    if kind == "msd":
        return {p.name[: -len(".nii.gz")]: [p] for p in _images(folder, ".nii.gz")}
    ending, n_channels = dataset_json["file_ending"], len(dataset_json["channel_names"])
    return {
        case: checked_channels(case, found, n_channels, folder, ending)
        for case, found in sorted(channel_files(folder, ending).items())
    }


def channel_files(folder: Path, ending: str) -> dict[str, dict[int, Path]]:
    """Case -> channel -> file of the ``CASE_XXXX{ending}`` images in ``folder``."""
    channels_of: dict[str, dict[int, Path]] = {}
    for path in _images(folder, ending):
        match = CHANNEL_SUFFIX.match(path.name[: -len(ending)])
        if match is None:
            raise InputError(
                "does not end in a 4-digit channel suffix (CASE_0000" + ending + ").",
                file=path,
                fix="rename the image files to CASE_XXXX" + ending + ", one file per channel.",
            )
        channels_of.setdefault(match["case"], {})[int(match["channel"])] = path
    return channels_of


def checked_channels(case: str, found: dict[int, Path], n_channels: int, folder: Path, ending: str) -> list[Path]:
    """A case's channel files in order; an error when one is missing or one too many is there. A natural 2D
    image file may hold several channels (an RGB .png: CASE_0000.png for channels 0-2), so with those endings
    fewer files than channels may be there, numbered from 0; verification counts their channels."""
    if is_natural_image(ending) and found and sorted(found) == list(range(min(len(found), n_channels))):
        return [found[c] for c in sorted(found)]
    for c in range(n_channels):
        if c not in found:
            raise InputError(
                f"channel {c} is missing: dataset.json declares {n_channels} channels "
                f"but only {sorted(found)} were found.",
                file=folder / f"{case}_{c:04d}{ending}",
                case=case,
                fix=f"add {case}_{c:04d}{ending} to {folder.name}.",
            )
    extra = sorted(set(found) - set(range(n_channels)))
    if extra:
        raise InputError(
            f"has channel files {extra} beyond the {n_channels} channels of dataset.json.",
            file=found[extra[0]],
            case=case,
            fix="remove the extra files or declare the channels in channel_names.",
        )
    return [found[c] for c in range(n_channels)]


def discover(root) -> Dataset:
    """Inspect a dataset folder and return its description, or raise an InputError saying what is wrong."""
    root = Path(root)
    file = root / "dataset.json"
    if not file.is_file():
        raise InputError(
            "no dataset.json found.",
            file=file,
            fix="point `dataset` in the config at an MSD Task folder or an nnU-Net v2 raw folder.",
        )
    raw = load_json(file)
    if "modality" in raw:
        return discover_msd(root, raw)
    return discover_raw(root, raw)


__all__ = ["Dataset", "discover", "label_values", "images_to_predict", "v1_to_v2_dataset_json", "with_labels"]
