"""Reading and writing what the stages exchange: medical images, JSON metadata and numpy arrays.

Conventions used everywhere in segflow:

* Image arrays are in SimpleITK's numpy order, (z, y, x) for 3D, with a leading channel axis when several
  channels are stacked: C x Z x Y x X, float32. 2D images become 1 x H x W with a large first spacing, as in
  nnU-Net, so that the rest of the method only ever sees 3D arrays.
* ``spacing`` is given in the same axis order as the array (reversed from SimpleITK's x, y, z).
* ``geometry`` keeps what SimpleITK reports (x, y, z order) so outputs can be written back in the
  original physical space: ``{"spacing": [...], "origin": [...], "direction": [...]}``.
* Natural 2D images (``.png``, ``.bmp``, ``.tif``) are read as nnU-Net's NaturalImage2DIO reads them: spacing
  1 x 1 whatever the file says (its DPI is no physical size), and a file of several components per pixel
  (RGB, RGBA) holds that many channels, in order. A 3D ``.tif``/``.tiff`` is read as nnU-Net's Tiff3DIO reads
  it: its spacing (z, y, x) comes from ``CASE.json`` beside it (``{"spacing": [...]}``), else 1 x 1 x 1, and a
  segmentation written as a 3D ``.tif`` gets that file beside it too.
* Every write is atomic: a temporary file in the destination folder, then a rename. A reader never sees a
  half-written file, and a killed job leaves no file that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from segflow.errors import InputError


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name is fixed (``.NAME.part.SUFFIXES``), not random: a job killed while writing leaves
    it behind, and the rerun that writes ``path`` again replaces and renames it, so no litter stays.
    Snakemake never runs two jobs for one output at once. A leftover is removed, never written into: it may
    be a second name of another file (a job killed after ``link_file`` gave it one, as training does for
    checkpoint_best.pt), whose content a write through it would truncate.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    tmp = path.with_name(f".{path.name}.part{suffix}")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path):
    """Yield a fresh temporary folder next to ``path`` (``.NAME.part``); rename it onto ``path`` (which must not
    exist) only if the block succeeds, remove it otherwise: nobody sees half a folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_json(path):
    """A JSON file's content; anything else (a pickle in its place, a broken file) is an InputError."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise InputError(
            f"is not valid JSON ({err}).",
            file=path,
            fix="repair the JSON syntax; segflow reads metadata only as JSON, never as a pickle.",
        ) from None


#: numpy's plain numeric types: nnU-Net v2's checkpoints hold numpy scalars (losses, Dice, its EMA) beside tensors.
NUMPY_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
NUMPY_DTYPES += ("float16", "float32", "float64")


def numpy_scalar_reconstructors() -> list:
    """numpy's scalar reconstructor under the two names a pickle may give it: ``numpy._core.multiarray.scalar``
    (written by numpy 2) and ``numpy.core.multiarray.scalar`` (numpy 1). This numpy's own function answers to
    its module's name; a function of the same behaviour answers to the other, so that a checkpoint written with
    either numpy loads with both (torch before 2.6 takes an allowlist entry's name from the function itself)."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1 before 1.26
        from numpy.core.multiarray import scalar

    def other(*args):
        return scalar(*args)

    other.__name__ = other.__qualname__ = "scalar"
    other.__module__ = (
        "numpy.core.multiarray" if scalar.__module__.startswith("numpy._core") else "numpy._core.multiarray"
    )
    return [scalar, other]


def plain_numpy_globals() -> list:
    """What unpickling a numpy scalar calls: its reconstructor (``numpy_scalar_reconstructors``) and the plain
    numeric dtypes. None of them runs code, and a scalar of any other dtype is still refused."""
    dtypes = [type(np.dtype(name)) for name in NUMPY_DTYPES]
    return [*numpy_scalar_reconstructors(), np.dtype, *dtypes]


def load_checkpoint(path, map_location="cpu", mapped: bool = False) -> dict:
    """A model checkpoint's tensors and plain values (numbers, strings, lists, dicts, numpy scalars), loaded with
    ``torch.load(weights_only=True)`` and an explicit allowlist: segflow's checkpoints and nnU-Net v2's
    (``checkpoint_final.pth``) load; a file that would run code while being unpickled is refused, as is one that
    cannot be read. ``mapped``: the tensors are the file's pages, read when first used, so that a reader of the
    network weights alone never reads the optimiser's state (twice the weights for AdamW) into memory."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(plain_numpy_globals()):
            if mapped and map_location == "cpu" and zipfile.is_zipfile(path):  # torch maps only its zip format
                return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        culprit = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f" (it calls {culprit.group(1)})" if culprit else ""
        raise InputError(
            f"holds more than tensors and plain values{what}; loading it could run code, so it was refused.",
            file=path,
            fix="use a checkpoint written by segflow or nnU-Net v2; never load model files from an untrusted source.",
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise InputError(
            f"cannot be read as a checkpoint ({type(err).__name__}: {str(err).strip().splitlines()[0]}).",
            file=path,
            fix="the file is truncated or damaged; train the fold again or copy the checkpoint again.",
        ) from None


def save_json(obj, path, indent: int | None = 2) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, sort_keys=False)
            f.write("\n")


def save_npy(array: np.ndarray, path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def load_npy(path, mmap: bool = False) -> np.ndarray:
    return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)


def copy_file(source, destination) -> None:
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)


def link_file(source, destination) -> None:
    """Give ``destination`` the content of ``source`` as a second name of the same file (a hard link: no copy,
    no disk), atomically; a copy where the file system has no hard links. Safe because segflow never writes a
    file in place: a later write of either name makes a new file and leaves the other name as it was."""
    with atomic_path(destination) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _sitk():
    import SimpleITK as sitk

    return sitk


def read_sitk(path, case: str | None = None):
    """Read a file with SimpleITK; an unreadable or truncated file becomes an InputError naming it."""
    sitk = _sitk()
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown reader error"
        raise InputError(
            f"cannot be read: {first_line}",
            file=path,
            case=case,
            fix="the file is truncated or not a valid image; copy or export it again.",
        ) from None


def image_dimension(path, case: str | None = None) -> int:
    """Number of dimensions of an image file, read from its header only."""
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        read_sitk(path, case)  # raises the uniform error
    return reader.GetDimension()


def geometry_of(image) -> dict:
    return {
        "spacing": [float(s) for s in image.GetSpacing()],
        "origin": [float(o) for o in image.GetOrigin()],
        "direction": [float(d) for d in image.GetDirection()],
    }


def array_and_spacing(image) -> tuple[np.ndarray, list[float]]:
    """Numpy array (3D, z-y-x) and matching spacing of a 2D or 3D SimpleITK image."""
    sitk = _sitk()
    array = sitk.GetArrayFromImage(image)
    spacing = [float(s) for s in image.GetSpacing()[::-1]]
    if array.ndim == 2:
        array = array[None]
        spacing = [999.0 * max(spacing), *spacing]
    elif array.ndim != 3:
        raise ValueError(f"expected a 2D or 3D image, got {array.ndim} dimensions")
    return array, spacing


# An image's channel file without its ending: CASE_XXXX.
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
NATURAL_IMAGE_ENDINGS = (".png", ".bmp", ".tif")
TIFF_ENDINGS = (".tif", ".tiff")


def is_natural_image(path) -> bool:
    return str(path).lower().endswith(NATURAL_IMAGE_ENDINGS)


def is_tiff(path) -> bool:
    return str(path).lower().endswith(TIFF_ENDINGS)


def tiff_spacing_file(path, channel_file: bool) -> Path:
    """nnU-Net's Tiff3DIO sidecar of a 3D .tif: CASE.json beside CASE_XXXX.tif (an image's channel file) or
    beside CASE.tif (a label map, a segmentation, or an image to predict given as one file)."""
    path = Path(path)
    stem = path.name.rsplit(".", 1)[0]
    match = CHANNEL_SUFFIX.match(stem) if channel_file else None
    return path.with_name((match["case"] if match else stem) + ".json")


def tiff_spacing(path, channel_file: bool, case: str | None) -> list[float]:
    """A 3D .tif's spacing (z, y, x) as Tiff3DIO takes it: from its CASE.json, else 1 x 1 x 1 (with a warning)."""
    sidecar = tiff_spacing_file(path, channel_file)
    if not sidecar.is_file():
        logging.getLogger("segflow").warning("%s: no %s beside it, spacing 1 x 1 x 1 (as nnU-Net)", path, sidecar.name)
        return [1.0, 1.0, 1.0]
    spacing = load_json(sidecar).get("spacing")
    if not (isinstance(spacing, list) and len(spacing) == 3 and all(isinstance(v, (int, float)) for v in spacing)):
        raise InputError(
            f"holds spacing {spacing!r}; a 3D .tif's spacing file holds three numbers (z, y, x).",
            file=sidecar,
            case=case,
            fix='write it as {"spacing": [z, y, x]} in mm, the order of the image\'s axes.',
        )
    return [float(v) for v in spacing]


def read_channels(path, case: str | None = None, channel_file: bool = True) -> tuple[np.ndarray, list[float], dict]:
    """The channels of one image file: (array C x Z x Y x X, spacing z-y-x, SimpleITK geometry). C is 1 except
    for a natural 2D image with several components per pixel (RGB: 3). ``channel_file``: a CASE_XXXX file of
    an image (not a label map), which tells where a 3D .tif's spacing file lies."""
    image = read_sitk(path, case)
    components = image.GetNumberOfComponentsPerPixel()
    natural = is_natural_image(path) and image.GetDimension() == 2
    if components != 1 and not natural:
        raise InputError(
            f"has {components} components per pixel; segflow expects one channel per file.",
            file=path,
            case=case,
            fix="split the channels into separate files CASE_0000, CASE_0001, ... (only 2D .png, .bmp and .tif "
            "files may hold several channels, such as RGB, as in nnU-Net).",
        )
    if image.GetDimension() not in (2, 3):
        raise InputError(
            f"is {image.GetDimension()}D; each channel file must be a 2D or 3D image.",
            file=path,
            case=case,
            fix="convert 4D images with segflow's MSD conversion (point `dataset` at the Task folder).",
        )
    if natural:
        image.SetSpacing((1.0, 1.0))
    elif is_tiff(path) and image.GetDimension() == 3:
        image.SetSpacing(tiff_spacing(path, channel_file, case)[::-1])
    if components == 1:
        array, spacing = array_and_spacing(image)
        return array[None], spacing, geometry_of(image)  # a view: a large CT is not copied here
    sitk = _sitk()
    channels = [array_and_spacing(sitk.VectorIndexSelectionCast(image, c)) for c in range(components)]
    return np.stack([array for array, _ in channels]), channels[0][1], geometry_of(image)


def read_image(path, case: str | None = None) -> tuple[np.ndarray, list[float], dict]:
    """One single-channel image (a label map, say): (array z-y-x, spacing z-y-x, SimpleITK geometry)."""
    channels, spacing, geometry = read_channels(path, case, channel_file=False)
    if len(channels) != 1:
        raise InputError(
            f"has {len(channels)} components per pixel where one channel is expected.",
            file=path,
            case=case,
            fix="save it with a single component per pixel (a label map as a grayscale image).",
        )
    return channels[0], spacing, geometry


class Case(NamedTuple):
    """A case as read from disk: C x Z x Y x X float32 channels, its 1 x Z x Y x X label map (or None),
    spacing (z, y, x), the first file's geometry, every channel file's geometry and how many channels each
    file holds (1, or 3 for an RGB image)."""

    data: np.ndarray
    seg: np.ndarray | None
    spacing: list[float]
    geometry: dict
    channel_geometries: list[dict]
    file_channels: list[int]


def read_case(image_files, label_file=None, case: str | None = None) -> Case:
    """Read all channels of a case and its label map.

    Channels must agree in shape and spacing (as nnU-Net's reader demands); the caller checks the rest.
    """
    data, geometries, spacing, counts = None, [], None, []
    for index, path in enumerate(image_files):
        arrays, sp, geo = read_channels(path, case)
        if data is not None and arrays.shape[1:] != data.shape[1:]:
            raise InputError(
                f"has shape {list(arrays.shape[1:])} but {image_files[0]} has {list(data.shape[1:])}; "
                "all channels of a case must have the same shape.",
                file=path,
                case=case,
                fix="resample the channels onto one grid before using them.",
            )
        if spacing is not None and not np.allclose(sp, spacing):
            raise InputError(
                f"has spacing {sp} but {image_files[0]} has {spacing}; all channels of a case must share one spacing.",
                file=path,
                case=case,
                fix="resample the channels onto one grid before using them.",
            )
        spacing = sp if spacing is None else spacing
        geometries.append(geo)
        filled = sum(counts)
        # Filled file by file, sized for one channel per remaining file: a large CT is never held twice as
        # float32. Only a file of several channels (a natural image's RGB) makes it grow.
        if data is None or filled + len(arrays) > len(data):
            grown = np.empty((filled + len(arrays) + len(image_files) - index - 1, *arrays.shape[1:]), np.float32)
            if data is not None:
                grown[:filled] = data[:filled]
            data = grown
        data[filled : filled + len(arrays)] = arrays
        counts.append(len(arrays))
    seg = None
    if label_file is not None:
        seg = read_image(label_file, case)[0][None]
    return Case(data, seg, spacing, geometries[0], geometries, counts)


def nifti_contains_non_finite(path, case: str | None = None) -> bool:
    """Read a NIfTI file's stored voxels with nibabel: whether it holds NaN or infinity, or an InputError if
    the file is truncated. Both checks are needed because SimpleITK's NIfTI reader turns NaN into 0 and
    fills a truncated .nii.gz up with zeros, without a word."""
    import nibabel

    try:
        image = nibabel.load(str(path))
        values = np.asanyarray(image.dataobj)
    except Exception as err:  # nibabel raises EOFError, zlib.error, OSError, ImageFileError, ...
        raise InputError(
            f"cannot be read: {type(err).__name__}: {err}",
            file=path,
            case=case,
            fix="the file is truncated or not a valid NIfTI image; copy or export it again.",
        ) from None
    return bool(np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all())


def write_image(array: np.ndarray, geometry: dict, path) -> None:
    """Write a z-y-x array with the given SimpleITK geometry (atomic)."""
    sitk = _sitk()
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    if is_tiff(path) and array.ndim == 3:  # Tiff3DIO's spacing file, as it writes one
        save_json({"spacing": list(geometry["spacing"])[::-1]}, tiff_spacing_file(path, channel_file=False))
