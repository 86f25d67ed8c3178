"""Validation of one (configuration, fold) (method reference §5.8): the fold's validation cases predicted
from their preprocessed arrays with the final weights, exported to their original geometry and evaluated.
A 3d_lowres fold whose cascade is trained also writes its predictions on the fullres grid, the cascade's
extra input (nnU-Net's ``predicted_next_stage``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from segflow.evaluate import evaluate_into
from segflow.export import export_prediction, probabilities_from_logits, segmentation_from_probabilities
from segflow.infer import (
    DEFAULT_WINDOW,
    Predictor,
    SlidingWindow,
    load_model,
    previous_stage_labels,
    with_previous_stage,
)
from segflow.io import load_json, load_npy, save_npy
from segflow.labels import has_regions
from segflow.plans import PlanConfiguration, data_folder
from segflow.progress import Countdown, Heartbeat
from segflow.resample import resample
from segflow.splits import fold_cases
from segflow.stream import Stream, overlaps
from segflow.train.cascade import previous_stage_files

log = logging.getLogger("segflow.validate")


def next_stage_segmentation(logits, configuration: PlanConfiguration, shape, dataset_json):
    """A lowres prediction as the cascade's input: logits resampled to the fullres preprocessed grid
    (``shape``), then turned into a 1 x ... label map (nnU-Net's ``predicted_next_stage``).

    nnunetv2 2.8.1 hands its resampler the lowres spacing as both the current and the target spacing here,
    so whether the slice axis is resampled separately depends on the lowres spacing alone; so does ours."""
    spacing = configuration.spacing
    resampled = resample(logits, shape, spacing, spacing, **configuration.probability_resampling)
    probabilities = probabilities_from_logits(resampled, has_regions(dataset_json["labels"]))
    segmentation = segmentation_from_probabilities(probabilities, dataset_json)
    return segmentation.astype(np.int8 if segmentation.max() <= 127 else np.int16)[None]


def validate_fold(
    plans_path,
    dataset_json_path,
    splits_path,
    preprocessed,
    configuration: str,
    fold,
    checkpoint,
    labels_dir,
    out_dir,
    device: str = "auto",
    with_probabilities: bool = False,
    tolerance: float = 1.0,
    previous_stage_dirs=(),
    next_stage: str | None = None,
    window: SlidingWindow = DEFAULT_WINDOW,
    stream: bool | None = None,
) -> None:
    """Predict a fold's validation cases from their preprocessed arrays (final weights), write them in the
    original geometry (+ probabilities ``.npz`` for ensembling) and evaluate them: ``summary.json``,
    ``per_case.csv``. A cascade configuration reads the previous stage's segmentations from
    ``previous_stage_dirs``; with ``next_stage`` the predictions are also written on that configuration's
    grid to ``next_stage/{case}.npy``, for the cascade to train on. ``stream``: cases overlapped
    (``segflow.stream``); by default where the network runs on a GPU."""
    plans, dataset_json = load_json(plans_path), load_json(dataset_json_path)
    _, cases = fold_cases(load_json(splits_path), fold)
    model = load_model(plans, dataset_json, configuration, [checkpoint])
    predictor = Predictor(model, device, window)
    previous = previous_stage_files(model.configuration.previous_stage, previous_stage_dirs, cases)
    folder = Path(preprocessed) / model.configuration.data_folder
    out, ending = Path(out_dir), dataset_json["file_ending"]
    out.mkdir(parents=True, exist_ok=True)
    if next_stage:
        (out / "next_stage").mkdir(exist_ok=True)
        next_stage_folder = Path(preprocessed) / data_folder(plans, next_stage)
    countdown = Countdown(f"validation of {configuration} fold {fold}: case", len(cases), interval=10)

    def read(numbered):
        """A case's preprocessed array (read here, ahead of the network) and its properties."""
        number, case = numbered
        data = load_npy(folder / f"{case}.npy")
        if previous:
            data = with_previous_stage(data, load_npy(previous[case]), previous_stage_labels(model))
        return number, case, data, load_json(folder / f"{case}.json")

    def export(case, logits, properties) -> None:
        probabilities_path = out / f"{case}.npz" if with_probabilities else None
        prediction = out / f"{case}{ending}"
        export_prediction(
            logits, properties, model.configuration, dataset_json, prediction, probabilities_path, predictor.device
        )
        if next_stage:
            shape = load_npy(next_stage_folder / f"{case}.npy", mmap=True).shape[1:]
            save_npy(
                next_stage_segmentation(logits, model.configuration, shape, dataset_json),
                out / "next_stage" / f"{case}.npy",
            )
        log.info("validated %s", case)
        countdown.step(case)

    heartbeat = Heartbeat(f"validation of {configuration} fold {fold}")
    with heartbeat, Stream(read, enumerate(cases, 1), overlaps(predictor.device, stream)) as streamed:
        for number, case, data, properties in streamed.cases:
            heartbeat.beat(f"case {case} ({number}/{len(cases)})")
            logits = predictor.predict(data)
            del data
            streamed.finish(export, case, logits, properties)
            del logits  # the export behind holds it until done
    pairs = [(Path(labels_dir) / f"{case}{ending}", out / f"{case}{ending}") for case in cases]
    evaluate_into(pairs, dataset_json["labels"], out, tolerance)
