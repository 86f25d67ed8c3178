"""Ensembles of two configurations (method reference §8.3): per cross-validation case, the two models'
probabilities (validation ``.npz``, original geometry) are averaged and turned into a label map, which is
written and evaluated like a model's own predictions."""

from __future__ import annotations

from pathlib import Path

from segflow.evaluate import evaluate_into
from segflow.export import load_probabilities, segmentation_from_probabilities, write_segmentation
from segflow.io import load_json, read_image


def validation_files(fold_dirs, suffix: str) -> dict[str, Path]:
    """Case id -> file of that suffix over the validation folders of a configuration's folds."""
    files = {}
    for folder in fold_dirs:
        for path in sorted(Path(folder).glob(f"*{suffix}")):
            files[path.name[: -len(suffix)]] = path
    return files


def ensemble_crossval(first_dirs, second_dirs, dataset_json_path, labels_dir, out_dir, tolerance: float = 1.0):
    dataset_json = load_json(dataset_json_path)
    ending = dataset_json["file_ending"]
    first, second = validation_files(first_dirs, ".npz"), validation_files(second_dirs, ".npz")
    if set(first) != set(second):
        raise ValueError("the two configurations' cross-validations cover different cases")
    segmentations = validation_files(first_dirs, ending)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for case in sorted(first):
        probabilities = (load_probabilities(first[case]) + load_probabilities(second[case])) / 2
        _, _, geometry = read_image(segmentations[case])
        target = out / f"{case}{ending}"
        write_segmentation(segmentation_from_probabilities(probabilities, dataset_json), geometry, dataset_json, target)
        pairs.append((Path(labels_dir) / f"{case}{ending}", target))
    evaluate_into(pairs, dataset_json["labels"], out, tolerance)
