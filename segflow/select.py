"""Selection of the best configuration or ensemble, and its postprocessing (method reference §8).

Candidates are the trained configurations (cross-validation summaries), then the pairwise ensembles; the
score is the foreground-mean Dice, the first candidate wins a tie. Postprocessing is determined on the
winner's cross-validation predictions. ``selection.json``:

* ``scores``: candidate -> foreground-mean Dice; ``best``: its name, ``configurations`` (one, or the two
  of an ensemble) and ``folds``;
* ``postprocessing``: the accepted keep-largest-component steps, with the Dice before and after;
* ``reproduce``: the Snakemake stage target (run where the workflow ran, with the run's configuration, which
  the select rule writes to ``config.yaml`` beside it) and the ``segflow predict`` command that apply the
  winner.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

from segflow.ensemble import validation_files
from segflow.evaluate import evaluated_labels
from segflow.io import load_json, read_image, save_json
from segflow.layout import Results
from segflow.postprocess import determine_postprocessing


def best_candidate(scores: dict) -> str:
    """The highest score; ties go to the first candidate (configurations are listed before ensembles)."""
    best = None
    for name, score in scores.items():
        if not math.isnan(score) and (best is None or score > scores[best]):
            best = name
    if best is None:
        raise ValueError("no candidate has a cross-validation score")
    return best


def cv_cases(prediction_files: dict, labels_dir, ending: str):
    cases = []
    for case, path in sorted(prediction_files.items()):
        reference, spacing, _ = read_image(Path(labels_dir) / f"{case}{ending}")
        cases.append((reference, read_image(path)[0], spacing))
    return cases


def select(
    configuration_summaries: dict,
    ensemble_dirs: dict,
    validation_dirs: dict,
    dataset_json_path,
    labels_dir,
    folds,
    results_dir,
    out,
    test_images=None,
) -> None:
    """``configuration_summaries``: configuration -> crossval summary.json; ``ensemble_dirs``: (first,
    second) -> ensemble folder; ``validation_dirs``: configuration -> its folds' validation folders;
    ``test_images``: the dataset's test folder, which the reproduce command predicts (IMAGES without one)."""
    dataset_json = load_json(dataset_json_path)
    ending = dataset_json["file_ending"]
    scores, members, prediction_dirs = {}, {}, {}
    for configuration, path in configuration_summaries.items():
        scores[configuration] = load_json(path)["foreground_mean"]["Dice"]
        members[configuration] = [configuration]
        prediction_dirs[configuration] = validation_dirs[configuration]
    for (first, second), folder in ensemble_dirs.items():
        name = Path(folder).name
        scores[name] = load_json(Path(folder) / "summary.json")["foreground_mean"]["Dice"]
        members[name] = [first, second]
        prediction_dirs[name] = [folder]
    best = best_candidate(scores)
    labels = evaluated_labels(dataset_json["labels"])
    predictions = validation_files(prediction_dirs[best], ending)
    postprocessing = determine_postprocessing(cv_cases(predictions, labels_dir, ending), labels)
    folds = [int(f) if str(f).isdigit() else f for f in folds]
    fold_args = " ".join(str(f) for f in folds)
    save_json(
        {
            "scores": scores,
            "best": best,
            "configurations": members[best],
            "folds": folds,
            "postprocessing": postprocessing["steps"],
            "dice_before_postprocessing": postprocessing["dice_before"],
            "dice_after_postprocessing": postprocessing["dice_after"],
            "reproduce": {
                "snakemake": f"snakemake --cores all prediction --configfile {Results(results_dir).config}",
                "command": reproduce_command(results_dir, fold_args, test_images),
            },
        },
        out,
    )


def reproduce_command(results_dir, fold_args: str, test_images=None) -> str:
    """``segflow predict`` with the selected model on the dataset's test images (into
    ``RESULTS/predictions_reproduced``), or with IMAGES and OUTPUT to fill in where the dataset has none."""
    if test_images is None:
        return f"segflow predict -i IMAGES -o OUTPUT -m {results_dir} -f {fold_args}"
    images, output = shlex.quote(str(test_images)), shlex.quote(str(Path(results_dir) / "predictions_reproduced"))
    return f"segflow predict -i {images} -o {output} -m {shlex.quote(str(results_dir))} -f {fold_args}"


def write_config(config, out) -> None:
    """The run's resolved configuration as YAML: passed back with ``--configfile``, it asks for exactly the
    run's jobs, so the ``reproduce`` command reruns nothing that exists."""
    import yaml

    from segflow.io import atomic_path

    plain = json.loads(json.dumps(dict(config)))  # nested mappings as plain dicts: safe_dump refuses others
    with atomic_path(out) as tmp:
        tmp.write_text(yaml.safe_dump(plain, sort_keys=False))
