"""Stable assignment of cases to batches, so that per-case work can run a few cases per job.

Starting a Snakemake job costs about a quarter of a second plus Python's imports, which dwarfs the work
on a small case (DESIGN.md, "Per-case jobs"). Jobs therefore take a batch of cases, while every case keeps
its own output files. A case's batch depends only on its id and the configured number of batches, never on
the other cases, so adding a case changes one batch and reruns only that batch's jobs.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

from segflow.errors import InputError
from segflow.io import load_json, save_json

# `case_batches: auto` keeps a batch at most this many cases: a cluster gets jobs of a few minutes, and
# Snakemake's cost of finding which job makes a per-case file (it scans the job's outputs) stays bounded.
MAX_AUTO_BATCH = 64
# The fewest batches `auto` makes; the count doubles from here, so a growing dataset reshuffles its batches
# (and reruns its per-case stages) only when it doubles past 512, 1 024, 2 048, ... cases.
MIN_AUTO_BATCHES = 8


def batch_index(case: str, n_batches: int) -> int:
    return zlib.crc32(case.encode("utf-8")) % n_batches


def _single_case_batch_name(case: str) -> str:
    # Rule names must be identifiers; the checksum keeps sanitised ids like "a-1" and "a_1" apart.
    return f"case_{re.sub(r'[^0-9A-Za-z_]', '_', case)}_{zlib.crc32(case.encode('utf-8')) % 4096:03x}"


def auto_batch_count(n_cases: int) -> int:
    """The batch count of ``case_batches: auto``: 8, doubled until no batch averages over 64 cases."""
    count = MIN_AUTO_BATCHES
    while n_cases > count * MAX_AUTO_BATCH:
        count *= 2
    return count


def assign_batches(cases, n_batches: int | str) -> dict[str, list[str]]:
    """Batch name -> sorted case ids, empty batches left out.

    ``n_batches`` >= 1 spreads the cases over that many hash buckets; 0 gives every case a job of its own
    (large volumes, clusters); "auto" chooses the count from the number of cases (auto_batch_count).
    """
    if n_batches == "auto":
        n_batches = auto_batch_count(len(cases))
    batches: dict[str, list[str]] = {}
    for case in sorted(cases):
        if n_batches <= 0:
            name = _single_case_batch_name(case)
        else:
            name = f"b{batch_index(case, n_batches):03d}"
        batches.setdefault(name, []).append(case)
    return dict(sorted(batches.items()))


def per_case(pattern: str, cases) -> list[str]:
    """``pattern`` with each case in place of ``{case}`` (other wildcards stay)."""
    return [pattern.replace("{case}", c) for c in cases]


def write_manifest(path, cases, outputs: dict[str, list[str]]) -> None:
    """A batch job's last output: its cases and, per kind, their files (in case order).

    Jobs that read every case (fingerprint, training, ...) depend on the batches' manifests, not on the
    thousands of per-case files: Snakemake then resolves a few hundred inputs instead of millions of
    job-file pairs, which keeps building the DAG of a 10 000-case dataset fast. A manifest is written last,
    so it is newer than its batch's files, and a batch that reruns makes its readers rerun.
    """
    for kind, files in outputs.items():
        if len(files) != len(cases):
            raise ValueError(f"{kind}: {len(files)} files for {len(cases)} cases")
    save_json({"cases": list(cases), **{k: list(map(str, v)) for k, v in outputs.items()}}, path)


def files_in_manifests(manifests, kind: str) -> list[str]:
    """The ``kind`` files of every case of the given batch manifests, sorted by case id (the order of the
    dataset's cases, whatever the batching)."""
    pairs = []
    for path in manifests:
        manifest = load_json(path)
        pairs += zip(manifest["cases"], manifest[kind], strict=True)
    return [file for _, file in sorted(pairs)]


def require_listed_files(path) -> None:
    """An InputError naming the first per-case file that a batch manifest lists and that is gone. Snakemake
    tracks a batch job by its manifest alone (its only declared output), so it cannot see that a case's file
    was deleted afterwards: the fix is to delete the manifest, which redoes the batch."""
    manifest = load_json(path)
    for kind in (k for k in manifest if k != "cases"):
        for case, file in zip(manifest["cases"], manifest[kind], strict=True):
            if not Path(file).exists():
                raise InputError(
                    f"gone, though the batch manifest {path} lists it.",
                    file=file,
                    case=case,
                    fix=f"delete {path} and run again: snakemake then redoes that batch.",
                )
