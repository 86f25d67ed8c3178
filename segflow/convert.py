"""Conversion of an MSD Task folder into the nnU-Net v2 raw layout, case by case.

A 3D MSD image is copied byte for byte as ``CASE_0000.nii.gz`` (no decoding, so conversion of
single-channel tasks costs a file copy); a 4D image (channels last in NIfTI, first in numpy) is split
into one 3D file per channel, each keeping spacing, origin and the 3 x 3 block of the direction. Labels
are copied unchanged: the MSD converter remaps no label values. ``dataset.json`` becomes the v2 form.
"""

from __future__ import annotations

from segflow.dataset import check_labels, v1_to_v2_dataset_json, with_labels
from segflow.errors import InputError
from segflow.io import copy_file, image_dimension, load_json, read_sitk, save_json, write_image


def _channel_count_error(case, path, found, expected) -> InputError:
    return InputError(
        f"holds {found} channel(s) but dataset.json declares {expected} modalities.",
        file=path,
        case=case,
        fix="make the 'modality' entries of dataset.json match the channels of the images.",
    )


def split_4d(case: str, source, destinations) -> None:
    import SimpleITK as sitk

    image = read_sitk(source, case)
    array = sitk.GetArrayFromImage(image)  # C x Z x Y x X
    if array.shape[0] != len(destinations):
        raise _channel_count_error(case, source, array.shape[0], len(destinations))
    geometry = {
        "spacing": list(image.GetSpacing()[:3]),
        "origin": list(image.GetOrigin()[:3]),
        "direction": [image.GetDirection()[4 * r + c] for r in range(3) for c in range(3)],
    }
    for channel, destination in zip(array, destinations, strict=True):
        write_image(channel, geometry, destination)


def convert_image(case: str, source_image, image_destinations) -> None:
    """Write one image in the raw layout: one file per channel."""
    dimension = image_dimension(source_image, case)
    if dimension == 4:
        split_4d(case, source_image, image_destinations)
    elif dimension in (2, 3):
        if len(image_destinations) != 1:
            raise _channel_count_error(case, source_image, 1, len(image_destinations))
        copy_file(source_image, image_destinations[0])
    else:
        raise InputError(
            f"is {dimension}D; MSD images must be 3D or 4D.",
            file=source_image,
            case=case,
            fix="re-export the image as a 3D (one channel) or 4D (channels) NIfTI file.",
        )


def convert_case(case: str, source_image, source_label, image_destinations, label_destination) -> None:
    """Write one case in the raw layout: one file per channel, plus its label map."""
    convert_image(case, source_image, image_destinations)
    copy_file(source_label, label_destination)


def convert_dataset_json(source, destination, labels: dict | None = None, regions_class_order=None) -> None:
    """dataset.json in v2 form; ``labels`` (with ``regions_class_order``) from the config replace the task's."""
    v2 = with_labels(v1_to_v2_dataset_json(load_json(source)), labels, regions_class_order)
    check_labels(v2, destination)
    save_json(v2, destination)


def convert_batch(cases, source_images, image_destinations, source_labels=None, label_destinations=None) -> None:
    """Convert several cases; ``image_destinations[i]`` lists case i's channel files. Without labels (images
    to predict) only the images."""
    for i, case in enumerate(cases):
        if source_labels:
            convert_case(case, source_images[i], source_labels[i], image_destinations[i], label_destinations[i])
        else:
            convert_image(case, source_images[i], image_destinations[i])
