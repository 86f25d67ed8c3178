"""Prediction of new images (method reference §6): each image preprocessed as in training, segmented by the
selected configuration(s) with their folds, an ensemble's probabilities averaged, postprocessing applied,
written in the image's own geometry. The workflow's ``predict`` rule and ``segflow predict`` share it; the
latter also predicts with nnU-Net v2 model folders (segflow/nnunet_models.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from segflow.candidates import parse
from segflow.export import export_logits, save_probabilities, segmentation_from_probabilities, write_segmentation
from segflow.infer import (
    DEFAULT_WINDOW,
    Model,
    Predictor,
    SlidingWindow,
    load_model,
    previous_stage_labels,
    with_previous_stage,
)
from segflow.io import load_json, read_case
from segflow.layout import FINAL_CHECKPOINT, Results
from segflow.nnunet_models import NNUNET_FINAL_CHECKPOINT, is_nnunet_model_folder, load_nnunet_models
from segflow.postprocess import apply_postprocessing
from segflow.preprocess import preprocess_arrays
from segflow.progress import Countdown
from segflow.stream import Stream, overlaps

log = logging.getLogger("segflow.predict")


class CasePredictor:
    """Probabilities of one image (original geometry) per member model, the cascade's previous stage predicted
    first and shared when the lowres model is an ensemble member too. ``previous`` names each member's previous
    stage (a member itself) or None."""

    def __init__(
        self, dataset_json: dict, models: dict[str, Model], previous: dict, device="auto", window=DEFAULT_WINDOW
    ):
        self.dataset_json = dataset_json
        self.previous = previous
        self.predictors = {name: Predictor(model, device, window) for name, model in models.items()}

    @classmethod
    def of_results(
        cls,
        model_dir,
        candidates,
        folds,
        checkpoint=FINAL_CHECKPOINT,
        device="auto",
        window=DEFAULT_WINDOW,
    ):
        """Candidates (segflow/candidates.py) of a workflow's results folder, with the previous stages they need."""
        results = Results(model_dir)
        needed = [parse(name) for name in candidates]
        plans = {}  # each plans file, read once (a cascade and its previous stage share one)

        def plans_of(candidate):
            path = results.candidate_plans(candidate)
            if path not in plans:
                plans[path] = load_json(path)
            return plans[path]

        previous = {}
        for candidate in list(needed):
            stage = candidate.previous_stage(plans_of(candidate))
            previous[candidate.name] = stage.name if stage else None
            if stage and stage not in needed:
                needed.insert(0, stage)
                previous[stage.name] = None
        dataset_json, models = load_json(results.dataset_json), {}
        for candidate in needed:
            name = candidate.name
            checkpoints = [Path(results.checkpoint(name, f, checkpoint)) for f in folds]
            models[name] = load_model(plans_of(candidate), dataset_json, candidate.configuration, checkpoints)
        return cls(dataset_json, models, previous, device, window)

    @classmethod
    def of_nnunet_folders(
        cls, folders, folds, checkpoint=NNUNET_FINAL_CHECKPOINT, device="auto", window=DEFAULT_WINDOW
    ):
        """nnU-Net v2 trained model folders, each a member named as ``member_names`` names it."""
        models = load_nnunet_models(folders, folds, checkpoint)
        dataset_json = next(iter(models.values())).dataset_json
        return cls(dataset_json, models, dict.fromkeys(models), device, window)

    def logits(self, image, name: str, cache: dict) -> tuple[np.ndarray, dict]:
        """Member ``name``'s logits of the image on its preprocessed grid, and the preprocessing's properties."""
        predictor, previous = self.predictors[name], self.previous[name]
        segmentation = None
        if previous:
            previous_probabilities = self.probabilities(image, previous, cache)
            segmentation = segmentation_from_probabilities(previous_probabilities, self.dataset_json)[None]
        data, properties = self.preprocess(image, name, segmentation)
        return predictor.predict(data), properties

    def preprocess(self, image, name: str, previous_segmentation=None) -> tuple[np.ndarray, dict]:
        """The image preprocessed for member ``name`` (with the previous stage's label map, for a cascade)."""
        model = self.predictors[name].model
        # A single member is the image's only reader: its preprocessing may normalise the image in place.
        overwrite = len(self.predictors) == 1
        data, seg, properties = preprocess_arrays(
            image.data, previous_segmentation, image.spacing, model.configuration, overwrite=overwrite
        )
        if previous_segmentation is not None:
            data = with_previous_stage(data, seg, previous_stage_labels(model))
        return data, properties

    def export(self, image, name: str, cache: dict, with_probabilities: bool):
        """(probabilities or None, label map) of member ``name`` in the image's geometry."""
        logits, properties = self.logits(image, name, cache)
        return self.export_logits(name, logits, properties, with_probabilities)

    def export_logits(self, name: str, logits, properties: dict, with_probabilities: bool):
        """(probabilities or None, label map) in the image's geometry of member ``name``'s logits."""
        predictor = self.predictors[name]
        configuration = predictor.model.configuration
        return export_logits(logits, properties, configuration, self.dataset_json, with_probabilities, predictor.device)

    def single_member(self, members) -> str | None:
        """The member whose preprocessing and export may run beside the network on other cases: the only one,
        unless it is a cascade's (an ensemble's or a cascade's steps wait on each other)."""
        if len(members) == 1 and self.previous[members[0]] is None:
            return members[0]
        return None

    def probabilities(self, image, name: str, cache: dict) -> np.ndarray:
        if name not in cache:
            cache[name] = self.export(image, name, cache, with_probabilities=True)[0]
        return cache[name]

    def segmentation(self, image, members, cache: dict, with_probabilities: bool):
        """(probabilities or None, label map) of the members' ensemble. One member without probabilities takes
        its label map from the logits: no C x image-shape array is made (a large CT's export stays small)."""
        if len(members) == 1 and not with_probabilities:
            return self.export(image, members[0], cache, with_probabilities=False)
        probabilities = self.probabilities(image, members[0], cache)
        if len(members) > 1:
            probabilities = sum(self.probabilities(image, m, cache) for m in members) / len(members)
        return probabilities, segmentation_from_probabilities(probabilities, self.dataset_json)


def case_predictor(model_dir, selection: dict, checkpoint=None, device="auto", window=DEFAULT_WINDOW) -> CasePredictor:
    """The predictor of a selection's members, from a workflow's results folder or nnU-Net v2 model folders (a
    list of them is an ensemble)."""
    folds = selection["folds"]
    folders = list(model_dir) if isinstance(model_dir, (list, tuple)) else [model_dir]
    if all(is_nnunet_model_folder(folder) for folder in folders):
        return CasePredictor.of_nnunet_folders(folders, folds, checkpoint or NNUNET_FINAL_CHECKPOINT, device, window)
    checkpoint = checkpoint or FINAL_CHECKPOINT
    (results,) = folders
    return CasePredictor.of_results(results, selection["configurations"], folds, checkpoint, device, window)


def predict_cases(
    image_files,
    out_files,
    model_dir,
    selection: dict,
    device: str = "auto",
    window: SlidingWindow = DEFAULT_WINDOW,
    with_probabilities: bool = False,
    checkpoint: str | None = None,
    stream: bool | None = None,
):
    """Segment images (``image_files[i]``: case i's channel files) with the selected model(s) of ``model_dir`` (a
    workflow's results folder, or a list of nnU-Net v2 model folders): fold logits averaged per member, members'
    probabilities averaged (an ensemble), postprocessing applied; one label map per case in its own geometry (and,
    if asked, its probabilities as CASE.npz). ``window``: the sliding window's step and mirroring. ``checkpoint``:
    the fold file name, by default the final one. ``stream``: cases overlapped (``segflow.stream``); by default
    where the network runs on a GPU."""
    predictor = case_predictor(model_dir, selection, checkpoint, device, window)
    dataset_json, members = predictor.dataset_json, selection["configurations"]
    single = predictor.single_member(members)
    countdown = Countdown("prediction: case", len(out_files))

    def prepare(case):
        """(output, geometry, image or None, preprocessed data and properties or None) of one case: read, and
        preprocessed too when a single member runs (its image then lives on only as its preprocessed data)."""
        files, out = case
        image = read_case(files, None, Path(out).name)
        if single is None:
            return out, image.geometry, image, None
        return out, image.geometry, None, predictor.preprocess(image, single)

    def write(out, geometry, probabilities, segmentation) -> None:
        segmentation = apply_postprocessing(segmentation, selection["postprocessing"])
        write_segmentation(segmentation, geometry, dataset_json, out)
        if with_probabilities:
            name = Path(out).name[: -len(dataset_json["file_ending"])]
            save_probabilities(probabilities, Path(out).parent / f"{name}.npz")
        log.info("predicted %s", out)
        countdown.step(Path(out).name)

    def export_and_write(out, geometry, logits, properties) -> None:
        write(out, geometry, *predictor.export_logits(single, logits, properties, with_probabilities))

    overlap = overlaps(next(iter(predictor.predictors.values())).device, stream)
    with Stream(prepare, zip(image_files, out_files, strict=True), overlap) as cases:
        for out, geometry, image, prepared in cases.cases:
            if prepared is None:
                results = predictor.segmentation(image, members, {}, with_probabilities)
                del image
                cases.finish(write, out, geometry, *results)
                del results
            else:
                data, properties = prepared
                logits = predictor.predictors[single].predict(data)
                del data, prepared
                cases.finish(export_and_write, out, geometry, logits, properties)
                del logits  # the export behind holds it until done
