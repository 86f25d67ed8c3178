"""What every rule script shares: logging to the rule's log file and turning bad input into a clean exit.

A script calls ``run_job(snakemake.log[0], function, ...)``. Python's logging goes to the log file, progress
lines (``segflow.progress``) to the terminal as well; an
InputError ends the job with its message (file, case, fix) on stderr and in the log, without a traceback,
and Snakemake then removes the job's outputs.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from segflow.batches import per_case, require_listed_files, write_manifest
from segflow.errors import InputError
from segflow.io import CHANNEL_SUFFIX
from segflow.progress import show_on_terminal


def chunks(flat, sizes):
    """Split a flat list into consecutive pieces of the given sizes (Snakemake flattens nested lists)."""
    out, start = [], 0
    for size in sizes:
        out.append(list(flat[start : start + size]))
        start += size
    return out


def is_channel_file_of(path, case: str) -> bool:
    """Whether ``path`` is named CASE_XXXX.ext for this case (the ending starts at the first dot after CASE)."""
    name = Path(path).name
    ending = name.find(".", len(case))
    match = CHANNEL_SUFFIX.match(name[:ending]) if name.startswith(case) and ending > 0 else None
    return match is not None and match["case"] == case


def files_by_case(files, cases, channels: int) -> list[list[str]]:
    """A flat list of channel files in case order (Snakemake flattens nested lists) split into each case's
    files, by their names: one file per channel, or fewer where a file holds several (an RGB .png holds
    three). Grouping by name rather than by a count per case keeps the jobs' params as they were, so that
    Snakemake's params trigger reruns nothing of an existing run."""
    remaining, grouped = list(files), []
    for case in cases:
        count = 0
        while count < len(remaining) and is_channel_file_of(remaining[count], case):
            count += 1
        if not 1 <= count <= channels:
            raise ValueError(f"case {case!r}: {count} channel files among {files}, expected 1 to {channels}")
        grouped.append(remaining[:count])
        remaining = remaining[count:]
    if remaining:
        raise ValueError(f"files of no case of {list(cases)}: {remaining}")
    return grouped


def images_per_case(job) -> list[list[str]]:
    """The channel files of each case of a batch job (its flat ``input.images``, ``params.cases`` and
    ``params.channels``)."""
    return files_by_case(job.input.images, job.params.cases, job.params.channels)


def batch_outputs(job) -> dict[str, list[str]]:
    """Kind -> the per-case files of a batch job, in case order: its ``params.outputs`` patterns (FOLDER/{case}
    ENDING) for each of its ``params.cases``."""
    return {kind: per_case(pattern, job.params.cases) for kind, pattern in job.params.outputs.items()}


def run_batch_job(job, function, *args):
    """run_job for a batch job, whose only declared output is its manifest: ``function(*args, *files)``, with
    the batch's per-case files of each kind (batch_outputs) as its last arguments, then the manifest. A
    failure removes every per-case file of the batch, as Snakemake removes a failed job's outputs."""
    outputs = batch_outputs(job)
    try:
        run_job(job.log[0], function, *args, *outputs.values())
    except BaseException:  # an input error's exit too
        for path in (Path(f) for files in outputs.values() for f in files):
            path.unlink(missing_ok=True)
        raise
    write_manifest(job.output.manifest, job.params.cases, outputs)


def run_job(log_path, function, *args, reads=(), **kwargs):
    """``function(*args, **kwargs)`` logged to ``log_path``; ``reads``: batch manifests whose per-case files
    must all be there first (segflow.batches.require_listed_files)."""
    logging.basicConfig(
        filename=log_path, filemode="w", level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    show_on_terminal()
    log = logging.getLogger("segflow")
    started = time.perf_counter()
    log.info("start %s", function.__qualname__)
    try:
        for manifest in reads:
            require_listed_files(manifest)
        result = function(*args, **kwargs)
    except InputError as err:
        log.error("%s", err)
        print(f"segflow: bad input: {err}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        log.exception("%s failed", function.__qualname__)  # the traceback in the job's own log too
        raise
    log.info("done in %.2f s", time.perf_counter() - started)
    return result
