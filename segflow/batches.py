"""Stable assignment of cases to batches, so that per-case work can run a few cases per job.

Starting a Snakemake job costs about a quarter of a second plus Python's imports, which dwarfs the work
on a small case (DESIGN.md, "Per-case jobs"). Jobs therefore take a batch of cases, while every case keeps
its own output files. A case's batch depends only on its id and the configured number of batches, never on
the other cases, so adding a case changes one batch and reruns only that batch's jobs.
"""

from __future__ import annotations

import re
import zlib


def batch_index(case: str, n_batches: int) -> int:
    return zlib.crc32(case.encode("utf-8")) % n_batches


def _single_case_batch_name(case: str) -> str:
    # Rule names must be identifiers; the checksum keeps sanitised ids like "a-1" and "a_1" apart.
    return f"case_{re.sub(r'[^0-9A-Za-z_]', '_', case)}_{zlib.crc32(case.encode('utf-8')) % 4096:03x}"


def assign_batches(cases, n_batches: int) -> dict[str, list[str]]:
    """Batch name -> sorted case ids, empty batches left out.

    ``n_batches`` >= 1 spreads the cases over that many hash buckets; 0 gives every case a job of its own
    (large volumes, clusters).
    """
    batches: dict[str, list[str]] = {}
    for case in sorted(cases):
        if n_batches <= 0:
            name = _single_case_batch_name(case)
        else:
            name = f"b{batch_index(case, n_batches):03d}"
        batches.setdefault(name, []).append(case)
    return dict(sorted(batches.items()))
