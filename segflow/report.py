"""What the HTML report (``snakemake --report``) shows beyond the training curves: tables of the dataset, the
plans, the cross-validation and the selection, and overlay pictures of a few cases.

Tables are small HTML pages (the report shows HTML results inline); overlays are PNGs of one axial
slice: the image, the reference in one panel and the prediction in the next.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from segflow.budget import counted, measured_epoch_seconds
from segflow.evaluate import label_key
from segflow.io import atomic_path, read_channels, read_image
from segflow.layout import Results
from segflow.plans import network_class, resolved_configuration

METRICS = ("Dice", "IoU", "HD95", "NSD", "n_ref", "n_pred")


TABLE_STYLE = (
    "body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#eee}"
)


def html_cells(values, tag: str) -> str:
    return "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in values)


def write_table(rows: list[dict], path, title: str) -> None:
    """An HTML table (the report shows HTML results inline)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    body = "".join(f"<tr>{html_cells((row.get(c, '') for c in columns), 'td')}</tr>" for row in rows)
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{TABLE_STYLE}</style></head><body><h3>{html.escape(title)}</h3>"
        f"<table><thead><tr>{html_cells(columns, 'th')}</tr></thead><tbody>{body}</tbody></table></body></html>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page)


def rounded(value, digits: int = 4):
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def dataset_rows(dataset_json: dict, fingerprint: dict, verify_report: dict) -> list[dict]:
    """The dataset and its fingerprint, one property per row."""
    spacings = np.array(fingerprint["spacings"])
    shapes = np.array(fingerprint["shapes_after_crop"])
    rows = [
        ("name", dataset_json.get("name", "")),
        ("training cases", len(shapes)),
        ("channels", ", ".join(f"{k}: {v}" for k, v in dataset_json["channel_names"].items())),
        ("labels", ", ".join(f"{k}: {v}" for k, v in dataset_json["labels"].items())),
        ("median spacing (z, y, x) mm", rounded(np.median(spacings, 0).tolist())),
        ("median shape after crop (z, y, x)", np.median(shapes, 0).tolist()),
        ("median relative size after crop", rounded(fingerprint["median_relative_size_after_cropping"])),
        ("verification warnings", len(verify_report.get("warnings", []))),
    ]
    for channel, stats in fingerprint["foreground_intensity_properties_per_channel"].items():
        summary = {k: rounded(stats[k], 2) for k in ("mean", "std", "percentile_00_5", "percentile_99_5")}
        rows.append((f"foreground intensity, channel {channel}", summary))
    return [{"property": name, "value": value} for name, value in rows]


def plan_rows(plans: dict) -> list[dict]:
    """One row per configuration of a planner's plans."""
    rows = []
    for name in plans["configurations"]:
        c = resolved_configuration(plans, name)
        arch = c["architecture"]["arch_kwargs"]
        unet = "n_stages" in arch  # nnU-Net's U-Nets; MONAI's networks have their own arguments
        rows.append(
            {
                "plans": plans["plans_name"],
                "configuration": name,
                "network": network_class(c),
                "spacing": rounded(c["spacing"]),
                "median shape": c["median_image_size_in_voxels"],
                "patch size": c["patch_size"],
                "batch size": c["batch_size"],
                "stages": arch["n_stages"] if unet else "",
                "features": arch["features_per_stage"] if unet else "",
                "first kernel": arch["kernel_sizes"][0] if unet else "",
                "normalisation": ", ".join(sorted(set(c["normalization_schemes"]))),
                "batch dice": c["batch_dice"],
                "previous stage": c.get("previous_stage", ""),
            }
        )
    return rows


def crossval_rows(summaries: dict[str, dict], labels: dict) -> list[dict]:
    """Cross-validation metrics per candidate (configuration or ensemble) and label, foreground mean last.
    ``labels`` is dataset.json's: summary keys ("1", "(1, 2)") are shown with their names."""
    names = {label_key(value): f"{name} {label_key(value)}" for name, value in labels.items()}
    rows = []
    for candidate, summary in summaries.items():
        means = {**summary["mean"], "foreground": summary["foreground_mean"]}
        for label, metrics in means.items():
            row = {"candidate": candidate, "label": names.get(label, label)}
            row.update({m: rounded(metrics[m]) for m in METRICS if m in metrics})
            rows.append(row)
    return rows


def selection_rows(selection: dict) -> list[dict]:
    steps = selection["postprocessing"]
    rows = [
        ("selected", selection["best"]),
        ("folds", selection["folds"]),
        ("postprocessing", "; ".join(describe_step(s) for s in steps) if steps else "none accepted"),
    ]
    for label, before in selection["dice_before_postprocessing"].items():
        after = selection["dice_after_postprocessing"][label]
        rows.append((f"Dice {label}: before / after postprocessing", f"{before:.4f} / {after:.4f}"))
    rows += [(f"score {k}", rounded(v)) for k, v in selection["scores"].items()]
    rows.append(("predict new images", selection["reproduce"]["command"]))
    return [{"item": name, "value": value} for name, value in rows]


def budget_rows(budget: dict, fold_dirs: dict[str, list]) -> list[dict]:
    """Per candidate: the budget's estimated seconds per epoch beside the median its folds measured (a candidate
    the probe could not time: why, and what its folds measured)."""
    rows = []
    for c in budget["candidates"]:
        measured = measured_epoch_seconds(fold_dirs.get(c["name"], []))
        timed = c["epoch_s"] is not None
        rows.append(
            {
                "candidate": c["name"],
                "probed on": f"{c['device']}, {counted(c['threads'], 'thread')}"
                if timed
                else c.get("not_timed") or f"not timed: {c['error']}",
                "s per iteration (probe)": round(c["train_step_s"], 3) if timed else "",
                "s per epoch, estimated": round(c["epoch_s"], 1) if timed else "",
                "s per epoch, measured": "" if measured is None else round(measured, 1),
                "measured / estimated": round(measured / c["epoch_s"], 2) if timed and measured is not None else "",
            }
        )
    return rows


def describe_step(step: dict) -> str:
    return "keep the largest component of labels " + "+".join(str(label) for label in step["labels"])


def label_colours(n: int) -> np.ndarray:
    """RGBA per label (background transparent), from a qualitative colour map."""
    from matplotlib import colormaps

    colours = colormaps["tab10"](np.arange(max(n, 1)) % 10)
    colours[:, 3] = 0.45
    return np.vstack([[0, 0, 0, 0], colours])


def busiest_slice(mask: np.ndarray) -> int:
    """The axial slice with the most foreground (the middle one when there is none)."""
    counts = mask.reshape(mask.shape[0], -1).sum(1)
    return int(counts.argmax()) if counts.any() else mask.shape[0] // 2


def write_overlay(image_file, prediction_file, out_png, title: str, reference_file=None) -> None:
    """One axial slice of the first channel, with the reference (if given) and the prediction painted on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = read_channels(image_file)[0][0]
    prediction = read_image(prediction_file)[0].astype(np.int64)
    panels = [("image", None), ("prediction", prediction)]
    if reference_file is not None:
        reference = read_image(reference_file)[0].astype(np.int64)
        panels.insert(1, ("reference", reference))
    z = busiest_slice((reference if reference_file is not None else prediction) > 0)
    colours = label_colours(int(max(p.max() for _, p in panels[1:])))
    low, high = np.percentile(image[z], [0.5, 99.5])
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for axis, (name, seg) in zip(axes[0], panels, strict=True):
        axis.imshow(image[z], cmap="gray", vmin=low, vmax=high)
        if seg is not None:
            axis.imshow(colours[np.clip(seg[z], 0, len(colours) - 1)])
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    figure.suptitle(f"{title}, slice {z}", fontsize=10)
    figure.tight_layout()
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, format="png", dpi=80)
    plt.close(figure)


def validation_prediction(results: Path, best: str, fold: int, case: str, ending: str) -> Path:
    """Where the selected model's (``best``) cross-validation prediction of ``case``, validated by ``fold``, lies."""
    return Path(Results(results).cross_validation_file(best, case, ending, fold))
