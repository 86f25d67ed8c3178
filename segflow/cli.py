"""The commands users run outside the workflow: ``segflow predict``, ``segflow export-nnunet`` and
``segflow evaluate``.

``segflow predict -i IMAGES -o OUTPUT -m MODEL`` segments a folder of images with a trained model folder
(``{results}/{dataset}`` of a workflow run: plans.json, dataset.json, selection.json, train/): by default
the selected configuration or ensemble, its folds and its postprocessing, exactly as the workflow's
``predict`` rule; ``-c`` / ``-f`` choose configurations and folds instead. MODEL may also be an nnU-Net v2
trained model folder (``nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIGURATION``): its folds (``-f``, by
default every numbered fold) with ``-chk`` (default checkpoint_final.pth), read without running any pickle,
predicted as ``nnUNetv2_predict`` would; several such folders are ensembled (probabilities averaged, as
``nnUNetv2_ensemble``), and ``-pp`` applies the postprocessing.json of nnU-Net's find_best_configuration.
Images are ``CASE_XXXX`` channel files or, for single-file cases (MSD style, 3D or 4D), ``CASE{ending}``.

``segflow export-nnunet -m MODEL -o FOLDER`` writes the selected candidates (or ``-c``'s) of a workflow run as
nnU-Net v2 model folders (``FOLDER/nnUNetTrainer__PLANS__CONFIGURATION``) that ``nnUNetv2_predict`` accepts.

``segflow evaluate -ref REFERENCES -pred PREDICTIONS`` evaluates every prediction against the reference
of the same name and writes nnU-Net's summary.json (plus Dice, IoU, HD95, NSD per case in a CSV); the labels
come from ``-l``, a dataset.json (``-dj``) or a model folder's (``-m``, segflow's or nnU-Net v2's, e.g. to
evaluate an nnU-Net fold's ``validation/`` folder).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from segflow.errors import InputError


def fold_argument(text: str) -> int | str:
    """A fold given with -f: a number, or ``all`` (nnU-Net's model trained on every case)."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fold is a number or 'all', not {text!r}") from None


def positive_int(text: str) -> int:
    """``--threads``: a whole number from 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"the number of threads is a whole number from 1, not {text!r}")
    return int(text)


def step_fraction(text: str) -> float:
    """``--step-size``: the sliding window's step as a fraction of the patch, in (0, 1]."""
    try:
        step = float(text)
    except ValueError:
        step = -1.0
    if not 0 < step <= 1:
        raise argparse.ArgumentTypeError(f"the step size is a fraction of the patch in (0, 1], not {text!r}")
    return step


def nnunet_selection(models: list[Path], args) -> dict:
    """What to predict with nnU-Net v2 model folders (several: an ensemble): each folder's one configuration, the
    folds asked for or, as nnunetv2 does, every numbered fold of the first folder that has the checkpoint
    (``fold_all`` when it is the only one), and the postprocessing of nnU-Net's postprocessing.json if given."""
    from segflow.nnunet_models import NNUNET_FINAL_CHECKPOINT, member_names, nnunet_postprocessing, trained_folds

    if args.configurations:
        raise InputError(
            "is an nnU-Net v2 model folder, which holds one configuration, so -c has nothing to choose.",
            file=models[0],
            fix="leave out -c, or pass the model folder of each configuration with -m.",
        )
    checkpoint, folds = args.checkpoint or NNUNET_FINAL_CHECKPOINT, args.folds
    if folds is None:
        trained = trained_folds(models[0], checkpoint)
        folds = [f for f in trained if f != "all"] or trained
    if not folds:
        raise InputError(f"holds no fold_K/{checkpoint}.", file=models[0], fix="name the folds' checkpoint with -chk.")
    postprocessing = nnunet_postprocessing(args.postprocessing) if args.postprocessing else []
    return {"configurations": member_names(models), "folds": folds, "postprocessing": postprocessing}


def model_selection(model: Path, configurations, folds, postprocessing: bool) -> dict:
    """selection.json of the model folder, or the configurations and folds asked for on the command line."""
    from segflow.candidates import parse
    from segflow.io import load_json
    from segflow.layout import Results

    results = Results(model)
    train = Path(results.path("train"))
    if folds and "all" in folds:
        raise InputError(
            "is a segflow results folder; -f all names nnU-Net's fold_all, which segflow does not train.",
            file=model,
            fix="give fold numbers with -f.",
        )
    selection_file = Path(results.selection)
    selection = load_json(selection_file) if selection_file.is_file() else None
    for name in configurations or ():
        try:
            parse(name)
        except ValueError as err:
            raise InputError(
                f"-c {err}.",
                file=train,
                fix="name folders of train/, e.g. 3d_fullres or 3d_fullres-resenc_m.",
            ) from None
    if configurations:
        if folds is None:
            found = [Path(results.candidate_folds(c)).glob("fold_*/*final.pt") for c in configurations]
            folds = sorted({int(p.parent.name[5:]) for paths in found for p in paths})
        chosen = {"configurations": configurations, "folds": folds, "postprocessing": []}
        if selection and selection["configurations"] == configurations:
            chosen["postprocessing"] = selection["postprocessing"]
    elif selection is None:
        raise InputError(
            "has no selection.json, so segflow does not know which configuration to use.",
            file=selection_file,
            fix="run the workflow up to its selection, or name configurations with -c (and folds with -f).",
        )
    else:
        chosen = dict(selection)
        if folds is not None:
            chosen["folds"] = folds
    if not postprocessing:
        chosen["postprocessing"] = []
    if not chosen["folds"]:
        raise InputError("holds no trained folds for the chosen configurations.", file=train)
    return chosen


def input_images(folder: Path, dataset_json: dict, scratch: Path) -> dict[str, list[Path]]:
    """Case -> channel files; single-file cases (MSD style) are split into channel files in ``scratch``."""
    from segflow.convert import convert_image
    from segflow.dataset import images_to_predict
    from segflow.io import CHANNEL_SUFFIX

    ending = dataset_json["file_ending"]
    if not folder.is_dir():
        raise InputError("is not a folder.", file=folder, fix="point -i at a folder of images.")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(ending) and not p.name.startswith("."))
    if not files:
        raise InputError(f"holds no {ending} images.", file=folder, fix="point -i at a folder of images.")
    if all(CHANNEL_SUFFIX.match(p.name[: -len(ending)]) for p in files):
        return images_to_predict(folder, "raw", dataset_json)
    n_channels = len(dataset_json["channel_names"])
    cases = {}
    for path in files:
        case = path.name[: -len(ending)]
        destinations = [scratch / f"{case}_{c:04d}{ending}" for c in range(n_channels)]
        convert_image(case, path, destinations)
        cases[case] = destinations
    return cases


def check_results_folder(model: Path) -> None:
    """A workflow's results folder has the plans and the dataset.json that prediction reads."""
    fixes = {
        "plans.json": "pass the results folder of a workflow run ({results}/{dataset}) as -m.",
        "dataset.json": "the workflow's select rule copies it there; for a run that stopped before the "
        "selection, copy the dataset's dataset.json (for an MSD task: raw/dataset.json) into the folder.",
    }
    for required, fix in fixes.items():
        if not (model / required).is_file():
            raise InputError("is missing from the model folder.", file=model / required, fix=fix)


def one_results_folder(models: list[Path], args) -> Path:
    """The one workflow results folder given with -m (its candidates are ensembled with -c instead)."""
    from segflow.nnunet_models import is_nnunet_model_folder

    if len(models) > 1:
        raise InputError(
            "is not an nnU-Net v2 model folder, and only those are ensembled with several -m.",
            file=next(m for m in models if not is_nnunet_model_folder(m)),
            fix="give one workflow results folder and its candidates with -c, or nnU-Net model folders only.",
        )
    if args.postprocessing:
        raise InputError(
            "is a workflow results folder: its postprocessing is in selection.json, so -pp does not apply.",
            file=models[0],
            fix="leave out -pp (or use --no-postprocessing).",
        )
    check_results_folder(models[0])
    return models[0]


def run_inference_settings(model: Path) -> dict:
    """The inference section of a workflow run's config.yaml (threads, step_size, mirror): what its ``predict``
    jobs used, so that ``segflow predict`` on its results folder does the same work by default; empty for a
    run that kept no config.yaml."""
    import yaml

    from segflow.layout import Results

    path = Path(Results(model).config)
    return (yaml.safe_load(path.read_text()) or {}).get("inference", {}) if path.is_file() else {}


def inference_choices(args, run: dict) -> tuple[int | None, float, bool]:
    """Threads (None: torch's default, all cores), sliding-window step and mirroring: the options given, else the
    run's (``run_inference_settings``), else nnU-Net's defaults."""
    threads = args.threads or run.get("threads")
    step = args.step_size or run.get("step_size", 0.5)
    return threads, step, not args.disable_tta and run.get("mirror", True)


def torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def predict_command(args) -> None:
    from segflow.infer import SlidingWindow
    from segflow.io import load_json
    from segflow.nnunet_models import is_nnunet_model_folder
    from segflow.predict import predict_cases

    models = [Path(m) for m in args.model]
    if all(is_nnunet_model_folder(m) for m in models):
        model = models
        selection = nnunet_selection(models, args)
        run = {}
    else:
        model = one_results_folder(models, args)
        selection = model_selection(model, args.configurations, args.folds, not args.no_postprocessing)
        run = run_inference_settings(model)
    threads, step, mirror = inference_choices(args, run)
    if threads:
        torch_threads(threads)
    dataset_json = load_json(models[0] / "dataset.json")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        cases = input_images(Path(args.input), dataset_json, Path(scratch))
        out_files = [output / f"{case}{dataset_json['file_ending']}" for case in cases]
        predict_cases(
            list(cases.values()),
            out_files,
            model,
            selection,
            args.device,
            window=SlidingWindow(step=step, mirror=mirror),
            with_probabilities=args.save_probabilities,
            checkpoint=args.checkpoint,
        )
    print(f"segflow: {len(cases)} segmentations in {output}")


def export_command(args) -> None:
    from segflow.io import load_json
    from segflow.layout import Results
    from segflow.nnunet_models import export_candidate

    model = Path(args.model)
    check_results_folder(model)
    selection = Path(Results(model).selection)
    if args.configurations:
        names = args.configurations
    elif selection.is_file():
        names = load_json(selection)["configurations"]
    else:
        raise InputError(
            "has no selection.json, so segflow does not know which candidate to export.",
            file=selection,
            fix="run the workflow up to its selection, or name candidates with -c.",
        )
    folders = [export_candidate(model, name, Path(args.output)) for name in names]
    for name, folder in zip(names, folders, strict=True):
        print(f"segflow: {name} -> {folder}")
        print(f"  nnUNetv2_predict_from_modelfolder -i IMAGES -o OUTPUT -m {folder}")
    if len(folders) > 1:
        print("  an ensemble: predict with each folder and --save_probabilities, then nnUNetv2_ensemble")


def evaluate_command(args) -> None:
    from segflow.evaluate import evaluate_folder, evaluated_labels, write_summary
    from segflow.io import load_json

    dataset_json_path = args.dataset_json or (Path(args.model) / "dataset.json" if args.model else None)
    if dataset_json_path:
        dataset_json = load_json(dataset_json_path)
        labels, ignore = evaluated_labels(dataset_json["labels"]), dataset_json["labels"].get("ignore")
        ending = dataset_json.get("file_ending", args.file_ending)
    elif args.labels:
        labels, ignore, ending = args.labels, args.ignore_label, args.file_ending
    else:
        raise SystemExit("segflow evaluate: give the labels with -l, a dataset.json with -dj or a model folder with -m")
    summary = evaluate_folder(args.reference, args.prediction, labels, ending, ignore, args.tolerance)
    out = Path(args.output or Path(args.prediction) / "summary.json")
    write_summary(summary, out, out.with_name("per_case.csv"))
    for key, metrics in summary["mean"].items():
        print(f"label {key}: Dice {metrics['Dice']:.4f}  HD95 {metrics['HD95']:.2f} mm  NSD {metrics['NSD']:.4f}")
    print(f"foreground mean Dice {summary['foreground_mean']['Dice']:.4f}; summary in {out}")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="segflow", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = main.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="segment a folder of images with a trained model folder")
    predict.add_argument("-i", "--input", required=True, help="folder of images")
    predict.add_argument("-o", "--output", required=True, help="folder for the segmentations")
    predict.add_argument(
        "-m",
        "--model",
        required=True,
        nargs="+",
        help="{results}/{dataset} folder of a workflow run, or nnU-Net v2 trained model folders "
        "(nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIGURATION; several: their ensemble)",
    )
    predict.add_argument(
        "-pp",
        "--postprocessing",
        help="nnU-Net folders: the postprocessing.json nnU-Net's find_best_configuration wrote (never its .pkl)",
    )
    predict.add_argument(
        "-c",
        "--configurations",
        nargs="+",
        help="candidates instead of the selection: folders of train/, e.g. 3d_fullres, 3d_fullres-resenc_m, "
        "3d_fullres-swinunetr",
    )
    predict.add_argument(
        "-f",
        "--folds",
        nargs="+",
        type=fold_argument,
        help="folds instead of the selection's (nnU-Net folders: or all)",
    )
    predict.add_argument(
        "-chk",
        "--checkpoint",
        help="fold checkpoint file (default: checkpoint_final.pt; nnU-Net folders: checkpoint_final.pth)",
    )
    predict.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    predict.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads (default: a workflow run's inference.threads, as its predict jobs; else all cores)",
    )
    predict.add_argument(
        "--disable-tta", action="store_true", help="no mirroring at test time (default: a run's inference.mirror)"
    )
    predict.add_argument(
        "--step-size",
        type=step_fraction,
        help="sliding-window step as a fraction of the patch, in (0, 1] (default: a workflow run's "
        "inference.step_size; else 0.5, as nnU-Net's -step_size)",
    )
    predict.add_argument("--no-postprocessing", action="store_true")
    predict.add_argument("--save-probabilities", action="store_true", help="also CASE.npz (C x image shape)")
    predict.set_defaults(run=predict_command)
    export = commands.add_parser(
        "export-nnunet", help="write trained candidates as nnU-Net v2 model folders (nnUNetv2_predict reads them)"
    )
    export.add_argument("-m", "--model", required=True, help="{results}/{dataset} folder of a workflow run")
    export.add_argument("-o", "--output", required=True, help="folder to write TRAINER__PLANS__CONFIGURATION into")
    export.add_argument("-c", "--configurations", nargs="+", help="candidates instead of the selection's")
    export.set_defaults(run=export_command)
    evaluate = commands.add_parser("evaluate", help="evaluate segmentations against references")
    evaluate.add_argument("-ref", "--reference", required=True, help="folder of reference label maps")
    evaluate.add_argument("-pred", "--prediction", required=True, help="folder of predicted label maps")
    evaluate.add_argument("-dj", "--dataset-json", help="dataset.json giving labels, regions and ignore label")
    evaluate.add_argument(
        "-m", "--model", help="a model folder (segflow's or nnU-Net v2's) whose dataset.json to use, instead of -dj"
    )
    evaluate.add_argument("-l", "--labels", nargs="+", type=int, help="labels to evaluate (without -dj)")
    evaluate.add_argument("--ignore-label", type=int)
    evaluate.add_argument("--file-ending", default=".nii.gz")
    evaluate.add_argument("--tolerance", type=float, default=1.0, help="surface Dice tolerance in mm")
    evaluate.add_argument("-o", "--output", help="summary.json path (default: in the prediction folder)")
    evaluate.set_defaults(run=evaluate_command)
    return main


def main(argv=None) -> None:
    from segflow.progress import show_on_terminal

    args = parser().parse_args(argv)
    # Warnings on stderr; progress lines have a handler of their own (show_on_terminal), so this one must not
    # print them again as they propagate to it.
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    warnings.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[warnings])
    show_on_terminal()
    try:
        args.run(args)
    except InputError as err:
        print(f"segflow: bad input: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:  # a file named on the command line that is missing or cannot be read
        print(f"segflow: cannot use {err.filename}: {err.strerror}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
