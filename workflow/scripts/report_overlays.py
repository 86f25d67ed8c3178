from pathlib import Path

from segflow.io import load_json
from segflow.jobs import files_by_case, run_job
from segflow.report import validation_prediction, write_overlay

sm = snakemake  # noqa: F821 (injected by Snakemake)
p = sm.params


def write_overlays():
    selection, splits = load_json(sm.input.selection), load_json(sm.input.splits)
    raw, ending = Path(p.raw), p.ending
    for fold, png in zip(p.folds, sm.output.validation, strict=True):
        case = sorted(splits[fold]["val"])[0]
        prediction = validation_prediction(Path(p.results), selection["best"], fold, case, ending)
        image = raw / "imagesTr" / f"{case}_0000{ending}"
        title = f"{case} (fold {fold}, {selection['best']})"
        write_overlay(image, prediction, png, title, reference_file=raw / "labelsTr" / f"{case}{ending}")
    images = [files[0] for files in files_by_case(sm.input.test_images, p.test_cases, p.channels)]  # first files
    for case, image, prediction, png in zip(
        p.test_cases, images, sm.input.test_predictions, sm.output.test, strict=True
    ):
        write_overlay(image, prediction, png, f"{case} (test image, {selection['best']})")


run_job(sm.log[0], write_overlays)
