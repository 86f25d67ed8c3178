"""Prediction of new images (method reference §6): each image preprocessed as in training, segmented by the
selected configuration(s) with their folds, an ensemble's probabilities averaged, postprocessing applied,
written in the image's own geometry. The workflow's ``predict`` rule and ``segflow predict`` share it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from segflow.candidates import parse
from segflow.infer import (
    Predictor,
    export_logits,
    load_model,
    previous_stage_labels,
    save_probabilities,
    segmentation_from_probabilities,
    with_previous_stage,
    write_segmentation,
)
from segflow.io import load_json, read_case
from segflow.postprocess import apply_postprocessing
from segflow.preprocess import preprocess_arrays
from segflow.progress import Countdown

log = logging.getLogger("segflow.predict")


class CasePredictor:
    """Probabilities of one image (original geometry) per candidate (segflow/candidates.py), the cascade's
    previous stage predicted first and shared when the lowres model is an ensemble member too."""

    def __init__(self, model_dir, candidates, folds, device: str = "auto", mirror: bool = True):
        model_dir = Path(model_dir)
        self.dataset_json = load_json(model_dir / "dataset.json")
        needed = [parse(name) for name in candidates]
        for candidate in list(needed):
            previous = candidate.previous_stage(load_json(model_dir / candidate.plans_file))
            if previous and previous not in needed:
                needed.insert(0, previous)
        self.predictors = {}
        for candidate in needed:
            name = candidate.name
            checkpoints = [model_dir / "train" / name / f"fold_{f}" / "checkpoint_final.pt" for f in folds]
            plans_path = model_dir / candidate.plans_file
            model = load_model(plans_path, model_dir / "dataset.json", candidate.configuration, checkpoints)
            self.predictors[name] = Predictor(model, device, mirror=mirror)

    def probabilities(self, image, name: str, cache: dict) -> np.ndarray:
        if name in cache:
            return cache[name]
        candidate, predictor = parse(name), self.predictors[name]
        plans = predictor.model.plans
        previous = candidate.previous_stage(plans)
        segmentation = None
        if previous:
            previous_probabilities = self.probabilities(image, previous.name, cache)
            segmentation = segmentation_from_probabilities(previous_probabilities, self.dataset_json)[None]
        configuration = candidate.configuration
        data, seg, properties = preprocess_arrays(image.data, segmentation, image.spacing, plans, configuration)
        if previous:
            data = with_previous_stage(data, seg, previous_stage_labels(predictor.model))
        logits = predictor.predict(data)
        cache[name] = export_logits(logits, properties, plans, configuration, self.dataset_json)[0]
        return cache[name]


def predict_cases(
    image_files,
    out_files,
    model_dir,
    selection: dict,
    device: str = "auto",
    mirror: bool = True,
    with_probabilities: bool = False,
):
    """Segment images (``image_files[i]``: case i's channel files) with the selected model(s): fold logits
    averaged per candidate, candidates' probabilities averaged (an ensemble), postprocessing
    applied; one label map per case in its own geometry (and, if asked, its probabilities as CASE.npz)."""
    predictor = CasePredictor(model_dir, selection["configurations"], selection["folds"], device, mirror)
    dataset_json = predictor.dataset_json
    countdown = Countdown("prediction: case", len(out_files))
    for files, out in zip(image_files, out_files, strict=True):
        image = read_case(files, None, Path(out).name)
        cache: dict = {}
        members = [predictor.probabilities(image, c, cache) for c in selection["configurations"]]
        probabilities = sum(members) / len(members)
        segmentation = segmentation_from_probabilities(probabilities, dataset_json)
        segmentation = apply_postprocessing(segmentation, selection["postprocessing"])
        write_segmentation(segmentation, image.geometry, dataset_json, out)
        if with_probabilities:
            name = Path(out).name[: -len(dataset_json["file_ending"])]
            save_probabilities(probabilities, Path(out).parent / f"{name}.npz")
        log.info("predicted %s", out)
        countdown.step(Path(out).name)
