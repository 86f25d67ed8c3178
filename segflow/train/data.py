"""Training batches: patch sampling as nnunetv2 2.8.1's ``nnUNetDataLoader`` (§5.5), each sample augmented
as it is cut (``augment.training_pipeline``, §5.6), or cut only with its augmentation's parameters, which are
applied to the whole batch (``device_augment.py``); ``augmentation.py`` says which.

Cases are drawn uniformly with replacement; sample j of a batch is forced to contain foreground when
``j >= round(batch_size * (1 - 0.33))``. A forced sample picks a class present in the case uniformly (the
ignore label's "annotated" class only when no other is present), then one of its stored voxels
(``class_locations``) as the patch centre. Any other sample's corner is uniform over the allowed range,
which reaches half the padding beyond the image; with an ignore label it is centred on a stored voxel of
the annotated class instead, so that it holds annotation. The loader cuts the *enlarged* patch (large
enough that rotation and scaling leave no empty corners); the spatial transform cuts the final patch from
it. Outside the image the image is 0 and the label -1. 2D configurations sample a depth-1 3D patch from
the volume, so a forced slice is drawn through the class's stored voxels (weighted by their number).

Randomness is numpy's global generator, drawn in the order nnunetv2 draws, and torch's, seeded from numpy's
state for every batch; the trainer seeds numpy for every batch from (seed, fold, purpose, batch index), so a
batch depends neither on the worker that made it nor on whether training was interrupted before it, and the
workers live for the whole training.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase

from segflow.io import load_json, load_npy
from segflow.train.patch_geometry import centre_window

OVERSAMPLE_FOREGROUND = 0.33
PR_SET_PDEATHSIG = 1  # prctl(2)


def forced_foreground(sample_index: int, batch_size: int, fraction: float = OVERSAMPLE_FOREGROUND) -> bool:
    return sample_index >= round(batch_size * (1 - fraction))


class Case:
    """A preprocessed case, memory-mapped: C x Z x Y x X data, 1 x Z x Y x X seg, class locations, and for
    the cascade the previous stage's 1 x Z x Y x X segmentation."""

    def __init__(self, folder, case: str, previous_stage=None):
        folder = Path(folder)
        self.data = load_npy(folder / f"{case}.npy", mmap=True)
        self.seg = load_npy(folder / f"{case}_seg.npy", mmap=True)
        self.seg_prev = None if previous_stage is None else load_npy(previous_stage, mmap=True)
        self.class_locations = {
            k: np.asarray(v, dtype=np.int64).reshape(-1, 3)
            for k, v in load_json(folder / f"{case}.json")["class_locations"].items()
        }


def numpy_state_digest() -> int:
    """A seed derived from numpy's global generator state, without advancing it."""
    _, keys, position, *_ = np.random.get_state()
    return zlib.crc32(keys.tobytes() + int(position).to_bytes(4, "little"))


def annotated_key(class_locations: dict) -> str | None:
    """The ignore label's "any annotated voxel" class, stored as "(-1, 0, 1, ...)"."""
    return next((k for k in class_locations if k.startswith("(-1,")), None)


class PatchLoader(SlimDataLoaderBase):
    """Infinite batches of (enlarged) patches with nnU-Net's foreground oversampling, each sample passed
    through ``transforms`` (a batchgeneratorsv2 pipeline) as it is cut, or, with ``draw``, the batch cut with
    the parameters of its batched augmentation (``device_augment.py``): sent as it is, to be augmented on the
    training device, or, with ``augment`` (a CPU training), augmented here, in the worker, by ``augment``.
    Batches are torch tensors, which torch hands between processes in shared memory."""

    def __init__(
        self,
        cases: list[Case],
        batch_size: int,
        patch_size,
        final_patch_size,
        is_2d: bool,
        transforms=None,
        draw=None,
        augment=None,
        seed_of=None,
        first_batch: int = 0,
        producers: int = 1,
    ):
        super().__init__(cases, batch_size, producers)
        self.is_2d = is_2d
        depth = [1] if is_2d else []  # 2D: a depth-1 patch of the volume, as nnunetv2 samples it
        self.patch_size = depth + [int(p) for p in patch_size]
        self.final_patch_size = depth + [int(p) for p in final_patch_size]
        self.transforms = transforms
        self.draw, self.augment = draw, augment
        self.owner = os.getpid()  # the process that made the loader; workers are forked from it
        # With ``seed_of``, batch i of the stream (``first_batch`` + i overall) draws from numpy seeded with
        # ``seed_of(first_batch + i)``, whichever of the ``producers`` makes it: batchgenerators' workers make
        # batches in turn (worker w every producers-th from w, its thread_id), and they are taken in turn.
        self.seed_of, self.first_batch, self.made = seed_of, first_batch, 0

    def bounding_box(self, shape, centre=None):
        """Lower and upper corners of a patch in an image of ``shape``; centred on ``centre`` if given."""
        dim = len(shape)
        need = [max(p - f, p - s) for p, f, s in zip(self.patch_size, self.final_patch_size, shape, strict=True)]
        lower = [-n // 2 for n in need]  # floor(-n / 2), as nnunetv2: one more voxel below for odd padding
        upper = [shape[d] + need[d] // 2 + need[d] % 2 - self.patch_size[d] for d in range(dim)]
        if centre is None:
            lbs = [np.random.randint(lower[d], upper[d] + 1) for d in range(dim)]
        else:
            lbs = [max(lower[d], int(centre[d]) - self.patch_size[d] // 2) for d in range(dim)]
        return lbs, [lb + p for lb, p in zip(lbs, self.patch_size, strict=True)]

    @staticmethod
    def centre_class(case: Case, force_fg: bool) -> str | None:
        """The class whose stored voxel centres the patch, or None for a uniform corner: a forced sample takes
        a class present in the case (the annotated class only if it is the only one); with an ignore label
        any other sample takes the annotated class."""
        annotated = annotated_key(case.class_locations)
        if not force_fg:
            if annotated is None:
                return None
            if not len(case.class_locations[annotated]):
                warnings.warn("no annotated voxel in a training case; its patch is placed at random", stacklevel=2)
                return None
            return annotated
        eligible = [k for k, v in case.class_locations.items() if len(v)]
        if annotated in eligible and len(eligible) > 1:
            eligible.remove(annotated)
        if not eligible:
            return None
        return eligible[np.random.choice(len(eligible))]

    def centre(self, case: Case, force_fg: bool):
        cls = self.centre_class(case, force_fg)
        if cls is None:
            return None
        voxels = case.class_locations[cls]
        return voxels[np.random.choice(len(voxels))]

    @staticmethod
    def crop(array: np.ndarray, lbs, ubs, fill, out: np.ndarray) -> None:
        """Cut [lbs, ubs) from C x ... ``array`` into ``out``, ``fill`` where the box leaves the image."""
        shape = array.shape[1:]
        source = tuple(slice(max(0, lo), min(s, hi)) for lo, hi, s in zip(lbs, ubs, shape, strict=True))
        target = tuple(slice(src.start - lo, src.stop - lo) for src, lo in zip(source, lbs, strict=True))
        inside = all(t.stop > t.start for t in target)
        if not inside or any(t.stop - t.start < o for t, o in zip(target, out.shape[1:], strict=True)):
            out.fill(fill)
        if inside:
            out[(slice(None), *target)] = array[(slice(None), *source)]

    def cut(self, cases: list[Case], boxes, size) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``boxes`` (lower, upper corners) of ``cases`` as a batch: N x C x size image, N x S x size int16
        label map (the cascade's previous segmentation as channel 1), each voxel copied once from the
        memory-mapped arrays; 2D configurations drop the depth-1 axis."""
        channels, seg_channels = self._data[0].data.shape[0], 1 + (self._data[0].seg_prev is not None)
        data = torch.empty((len(cases), channels, *size))
        seg = torch.empty((len(cases), seg_channels, *size), dtype=torch.int16)
        for j, (case, (lbs, ubs)) in enumerate(zip(cases, boxes, strict=True)):
            image, labels = data[j].numpy(), seg[j].numpy()
            self.crop(case.data, lbs, ubs, 0.0, image)
            self.crop(case.seg, lbs, ubs, -1, labels[:1])
            if case.seg_prev is not None:
                self.crop(case.seg_prev, lbs, ubs, -1, labels[1:])
        return (data[:, :, 0], seg[:, :, 0]) if self.is_2d else (data, seg)

    def centred(self, lbs) -> tuple[list[int], list[int]]:
        """The final patch at the centre of the enlarged one starting at ``lbs`` (where the spatial transform
        cuts it when it neither rotates nor scales)."""
        window = centre_window(self.patch_size, self.final_patch_size)
        start = [lo + w.start for lo, w in zip(lbs, window, strict=True)]
        return start, [s + f for s, f in zip(start, self.final_patch_size, strict=True)]

    def next_batch_index(self) -> int:
        """The overall index of the batch this producer makes next."""
        index = self.first_batch + self.thread_id + self.made * self.number_of_threads_in_multithreaded
        self.made += 1
        return index

    def set_thread_id(self, thread_id: int) -> None:
        super().set_thread_id(thread_id)
        if os.getpid() != self.owner:  # batchgenerators calls this first in each worker it forks
            end_with_the_training(self.owner)

    def generate_train_batch(self) -> dict:
        if self.seed_of is not None:
            np.random.seed(self.seed_of(self.next_batch_index()))
        # Workers seed numpy only; torch's generator (batchgeneratorsv2 draws from both) follows from numpy's
        # state, read without drawing, so numpy's draws stay exactly those of nnunetv2's loader.
        torch.manual_seed(numpy_state_digest())
        with one_torch_thread(restore=os.getpid() == self.owner), torch.no_grad():
            picks = np.random.choice(len(self._data), self.batch_size, replace=True)
            cases = [self._data[i] for i in picks]
            boxes = [
                self.bounding_box(case.data.shape[1:], self.centre(case, forced_foreground(j, self.batch_size)))
                for j, case in enumerate(cases)
            ]
            if self.draw is not None:
                batch = self.cut_for_the_device(cases, boxes)
                if self.augment is None:
                    return batch
                data, seg = self.augment(batch)
            else:
                data, seg = self.cut(cases, boxes, self.patch_size)
            if self.transforms is not None:  # as nnunetv2: every sample cut first, then augmented one by one
                samples = [self.transforms(image=d, segmentation=s) for d, s in zip(data, seg, strict=True)]
                data = torch.stack([s["image"] for s in samples])
                seg = torch.stack([s["segmentation"] for s in samples])
        return {"data": data, "seg": seg}

    def cut_for_the_device(self, cases, boxes) -> dict:
        """A batch for augmentation on the device: its parameters, the final patches at the centres of the
        enlarged ones (what a sample neither rotated nor scaled becomes), and the enlarged patches of the
        samples that are (so only they travel at the enlarged size)."""
        params = self.draw(len(cases), cases[0].data.shape[0])
        moved = np.flatnonzero(params["spatial"])
        data, seg = self.cut(cases, [self.centred(lbs) for lbs, _ in boxes], self.final_patch_size)
        moved_data, moved_seg = self.cut([cases[j] for j in moved], [boxes[j] for j in moved], self.patch_size)
        return {"data": data, "seg": seg, "moved_data": moved_data, "moved_seg": moved_seg, "augmentation": params}


def end_with_the_training(owner: int) -> None:
    """Make this loader worker die with the training process that forked it, even one killed with SIGKILL (the
    OOM killer, a user): batchgenerators' workers would otherwise go on polling a queue no one reads, holding
    their memory and the job's output pipe."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != owner:  # it died before this worker asked
        os._exit(0)


@contextmanager
def one_torch_thread(restore: bool):
    """Augment on one thread: the workers are the parallelism. A forked worker stays at one thread for good
    (an OpenMP pool inherited from the parent deadlocks there); in the training process itself (no workers)
    the training's threads come back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        if restore:
            torch.set_num_threads(threads)


class Prefetcher:
    """Batches from ``prepare`` (the next batch, moved to the device and augmented there). On CUDA the next
    one is prepared in a background thread on a stream of its own while the current step runs; on a CPU
    inline, since a second thread of tensor work only competes with the step's threads (measured: 12.8 s
    against 15.6 s per Hippocampus iteration on 2 cores). Batches come out in the order they were made, so
    they are the same either way."""

    def __init__(self, prepare, device: torch.device, ahead: bool | None = None):
        self.prepare = prepare
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.pool = self.pending = None
        if ahead if ahead is not None else self.stream is not None:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segflow-batches")
            self.pending = self.pool.submit(self.prepared_ahead)

    def prepared_ahead(self):
        if self.stream is None:
            return self.prepare()
        with torch.cuda.stream(self.stream):
            return self.prepare()

    def __iter__(self):
        return self

    def __next__(self):
        if self.pool is None:
            return self.prepare()
        data, targets = self.pending.result()
        self.pending = self.pool.submit(self.prepared_ahead)
        if self.stream is not None:  # the step's stream waits for the copy and augmentation, owns their memory
            torch.cuda.current_stream().wait_stream(self.stream)
            for tensor in (data, *targets):
                tensor.record_stream(torch.cuda.current_stream())
        return data, targets

    def close(self) -> None:
        """Waits for the batch in preparation (the loader's workers must outlive it) and stops the thread."""
        if self.pool is not None:
            self.pending.cancel()
            self.pool.shutdown(wait=True)
