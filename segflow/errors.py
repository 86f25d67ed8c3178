"""The one exception type for bad input: it always says which file, which case and what to do."""

import sys
from typing import NoReturn


class InputError(Exception):
    """Raised when a user's data cannot be used as it is.

    The message names the offending file and case, states the problem and suggests the fix, so that a user
    reading only the last line of a Snakemake log knows what to change.
    """

    def __init__(self, problem: str, *, file=None, case: str | None = None, fix: str | None = None):
        self.problem = problem
        self.file = None if file is None else str(file)
        self.case = case
        self.fix = fix
        parts = []
        if case is not None:
            parts.append(f"case {case!r}")
        if self.file is not None:
            parts.append(f"file {self.file}")
        where = f"[{', '.join(parts)}] " if parts else ""
        message = f"{where}{problem}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


def stop_workflow(error, kind: str = "bad input") -> NoReturn:
    """End a Snakemake run while it reads the workflow, with one line on stderr and exit status 1: a
    WorkflowError would add Snakemake's file, line and stack frame to the message."""
    print(f"segflow: {kind}: {error}", file=sys.stderr, flush=True)
    raise SystemExit(1)
