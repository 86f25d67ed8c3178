"""Cross-validation splits, identical to nnU-Net's (method reference §5.1).

Case ids are sorted and split by a shuffled 5-fold KFold with seed 12345 (sklearn's algorithm, written with
numpy only): shuffle the indices with ``RandomState(12345)``, cut them into consecutive folds of
``N // 5`` cases (the first ``N % 5`` folds one more). Each fold lists ``train`` and ``val`` ids in
ascending order. A splits file supplied by the user (``splits_final.json`` in the dataset folder or the
``splits`` config key) is used instead, after checking that it names only known cases.

``splits.json``: ``[{"train": [...], "val": [...]}, ...]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.errors import InputError
from segflow.io import load_json, save_json

SPLIT_SEED = 12345
NUM_FOLDS = 5


def kfold_splits(cases, n_folds: int = NUM_FOLDS, seed: int = SPLIT_SEED) -> list[dict]:
    ids = sorted(cases)
    if len(ids) < n_folds:
        raise InputError(
            f"{len(ids)} training cases cannot be split into {n_folds} folds.",
            fix=f"provide at least {n_folds} cases, or a splits file of your own.",
        )
    order = np.arange(len(ids))
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_folds, len(ids) // n_folds)
    sizes[: len(ids) % n_folds] += 1
    splits, start = [], 0
    for size in sizes:
        val = set(order[start : start + size].tolist())
        start += size
        splits.append(
            {
                "train": [ids[i] for i in range(len(ids)) if i not in val],
                "val": [ids[i] for i in range(len(ids)) if i in val],
            }
        )
    return splits


def check_user_splits(splits, cases, path) -> list[dict]:
    known = set(cases)
    if not isinstance(splits, list) or not all(isinstance(s, dict) and {"train", "val"} <= set(s) for s in splits):
        raise InputError(
            'must be a list of {"train": [...], "val": [...]} objects.',
            file=path,
            fix="write the splits in nnU-Net's splits_final.json format.",
        )
    for k, split in enumerate(splits):
        unknown = sorted((set(split["train"]) | set(split["val"])) - known)
        if unknown:
            raise InputError(
                f"fold {k} names cases that are not in the dataset: {unknown[:5]}.",
                file=path,
                fix="remove them from the splits file or add the cases to the dataset.",
            )
    return splits


def write_splits(cases, out, user_splits=None) -> None:
    """nnU-Net's five folds, or the user's splits. A dataset of fewer than five cases (which may train only
    fold ``all``: ``check_folds`` refuses the others) gets one fold per case, which ``all`` reads its cases from."""
    if user_splits:
        splits = check_user_splits(load_json(user_splits), cases, user_splits)
    else:
        splits = kfold_splits(cases, min(NUM_FOLDS, len(cases)))
    save_json(splits, out)


def check_folds(folds, cases, dataset_json, user_splits=None) -> None:
    """Refuse, before any job runs, folds that the splits will not have: a fold number past the last of nnU-Net's
    five (or of the user's splits file), or any fold number for a dataset of fewer cases than folds."""
    if user_splits and not Path(user_splits).is_file():
        raise InputError("the splits file does not exist.", file=user_splits, fix="correct the config key `splits`.")
    numbered = [f for f in folds if f != "all"]
    if not numbered:
        return
    if user_splits:
        splits = check_user_splits(load_json(user_splits), cases, user_splits)
        count, source, fix = len(splits), f"the splits file {user_splits}", "folds it has, or add folds to it"
    else:
        count, source, fix = (
            NUM_FOLDS,
            "nnU-Net's cross-validation",
            "folds from 0 to 4, e.g. --config folds='[0, 1, 2, 3, 4]'",
        )
        if len(cases) < NUM_FOLDS:
            raise InputError(
                f"{len(cases)} training case{'s' if len(cases) != 1 else ''} cannot be split into {NUM_FOLDS} "
                f"folds (config key `folds` asks for {numbered}).",
                file=dataset_json,
                fix=f"add cases (at least {NUM_FOLDS}), train one model on every case with --config "
                "folds='[all]', or give a splits file (config key `splits`).",
            )
    past = [f for f in numbered if f >= count]
    if past:
        raise InputError(
            f"config key `folds`: fold {past[0]} does not exist: "
            f"there are {count} folds (0 to {count - 1}) in {source}.",
            fix=f"ask for {fix}.",
        )


def fold_cases(splits, fold) -> tuple[list[str], list[str]]:
    """Training and validation case ids of a fold; ``all`` trains on every case and validates on them too."""
    if str(fold) == "all":
        cases = sorted({c for s in splits for c in s["train"] + s["val"]})
        return cases, cases
    split = splits[int(fold)]
    return list(split["train"]), list(split["val"])
