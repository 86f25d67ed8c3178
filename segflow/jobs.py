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

from segflow.batches import write_manifest
from segflow.errors import InputError
from segflow.progress import show_on_terminal


def chunks(flat, sizes):
    """Split a flat list into consecutive pieces of the given sizes (Snakemake flattens nested lists)."""
    out, start = [], 0
    for size in sizes:
        out.append(list(flat[start : start + size]))
        start += size
    return out


def images_per_case(job) -> list[list[str]]:
    """The channel files of each case of a batch job, from its flat ``input.images`` and
    ``params.files_per_case`` (one per channel, or fewer: an RGB .png holds three channels)."""
    return chunks(job.input.images, job.params.files_per_case)


def write_batch_manifest(job) -> None:
    """A batch job's manifest (its ``output.manifest``): its ``params.cases`` and its other named outputs."""
    outputs = {name: list(files) for name, files in job.output.items() if name != "manifest"}
    write_manifest(job.output.manifest, job.params.cases, outputs)


def run_job(log_path, function, *args, **kwargs):
    logging.basicConfig(
        filename=log_path, filemode="w", level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    show_on_terminal()
    log = logging.getLogger("segflow")
    started = time.perf_counter()
    log.info("start %s", function.__qualname__)
    try:
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
