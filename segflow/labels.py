"""What ``dataset.json``'s ``labels`` mean for the network (method reference §1.2): plain labels (softmax
over the label values) or regions (a label given as a list of values; one sigmoid output per region), and
the optional ``ignore`` label, which is never an output."""

from __future__ import annotations


def plain_labels(labels: dict) -> dict:
    """The labels without the ignore label."""
    return {k: v for k, v in labels.items() if k != "ignore"}


def has_regions(labels: dict) -> bool:
    return any(isinstance(v, (list, tuple)) for v in plain_labels(labels).values())


def regions(labels: dict) -> list:
    """The regions in dataset.json order, background excluded: tuples of label values, or a single value
    (as nnU-Net keeps them, so a one-label region is named "3", not "(3,)")."""
    plain = plain_labels(labels)
    return [tuple(v) if isinstance(v, (list, tuple)) else v for k, v in plain.items() if k != "background"]


def output_channels(labels: dict) -> list:
    """What each output channel of the network stands for: regions (tuples) or label values (ints)."""
    return regions(labels) if has_regions(labels) else sorted(plain_labels(labels).values())


def label_values(labels: dict) -> list[int]:
    """Every value a label map of the dataset may hold (each label's, a region's values, the ignore label's),
    sorted."""
    values = set()
    for value in labels.values():
        values.update(value if isinstance(value, (list, tuple)) else [value])
    return sorted(int(v) for v in values)
