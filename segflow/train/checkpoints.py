"""A fold folder's checkpoints: written so that a killed training resumes, and never half a file.

The files of a fold folder (``train/<candidate>/fold_<k>``, segflow.layout):

* ``checkpoint_latest.pt`` - everything needed to resume (weights, optimiser, scaler, logs, epoch), written
  atomically after every epoch; during training the one before it stays as ``checkpoint_previous.pt``, the
  fallback when the latest cannot be read. It is not a declared output of the Snakemake rule, so a failed
  or killed job keeps it and the next attempt continues after the last finished epoch.
* ``checkpoint_final.pt`` - the state after the last epoch, last of all: a hard link to
  ``checkpoint_latest.pt`` (one file on disk; see ``FoldCheckpoints.finish``). ``checkpoint_best.pt`` - the state
  at the best EMA pseudo Dice, likewise a second name of that epoch's ``checkpoint_latest.pt`` (written once).
* ``progress.png`` - losses, pseudo Dice and its EMA; epoch duration; learning rate (``segflow.train.curves``).
* ``training_log.jsonl`` - one JSON object per epoch.
* ``pretrained.json`` - with ``train.pretrained_weights``: the checkpoint the fold started from, what was loaded
  and skipped, and the digest of the weights after loading.
* ``training_log_<UTC time>.txt`` - the log of one attempt (start, resume point, every finished epoch).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from segflow.errors import InputError
from segflow.io import atomic_path, link_file, load_checkpoint
from segflow.layout import FINAL_CHECKPOINT

log = logging.getLogger("segflow.train")

LATEST, PREVIOUS, BEST = "checkpoint_latest.pt", "checkpoint_previous.pt", "checkpoint_best.pt"


class FoldCheckpoints:
    def __init__(self, out: Path):
        self.out = Path(out)

    def save(self, state: dict, best: bool = False) -> None:
        """checkpoint_latest.pt, the one before it kept as checkpoint_previous.pt: if the latest is found
        damaged (a full disk, a copy cut short), training falls back one epoch instead of starting over. With
        ``best``, the same state is also checkpoint_best.pt: a second name of the file (written once, not
        twice), given before the latest is replaced, so that a job killed in between resumes from the
        epoch before and finds the best checkpoint again."""
        latest = self.out / LATEST
        with atomic_path(latest) as tmp:
            torch.save(state, tmp)
            if best:
                link_file(tmp, self.out / BEST)
            if latest.exists():
                os.replace(latest, self.out / PREVIOUS)

    def newest_readable(self, signature: str, device) -> tuple[Path, dict] | None:
        """The newest readable checkpoint of a run with ``signature`` (latest, else previous), or None."""
        for path in (self.out / LATEST, self.out / PREVIOUS):
            if not path.is_file():
                continue
            try:
                checkpoint = load_checkpoint(path, map_location=device)
            except InputError as err:
                log.warning("not resuming from %s: %s", path, err)
                continue
            if checkpoint.get("signature") != signature:
                log.warning("ignoring %s: it belongs to a run with other settings", path)
                return None
            return path, checkpoint
        return None

    def finish(self) -> None:
        """checkpoint_final.pt is the state after the last epoch, a second name (hard link) of
        checkpoint_latest.pt, so that keeping the resumable state costs no disk: a job killed after this
        point but before Snakemake registered its success loses its declared outputs, and its next attempt
        resumes after the last epoch and only writes them again. The fallback one epoch back is no longer
        needed. A finished fold thus holds what nnU-Net keeps: the final and the best weights."""
        link_file(self.out / LATEST, self.out / FINAL_CHECKPOINT)
        (self.out / PREVIOUS).unlink(missing_ok=True)
