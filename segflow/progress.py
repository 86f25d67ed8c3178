"""Progress lines where a person waits: training epochs, predicted and validated cases, preprocessed cases.

They go to the logger ``segflow.progress``: into the job's log file like every other line, and, once
``show_on_terminal()`` has run (every rule script does it through ``run_job``; ``segflow predict`` too), to
stderr, which Snakemake passes through to its terminal.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

log = logging.getLogger("segflow.progress")
HEARTBEAT_S = 60.0  # the README's promise: a line at least every minute while a job works


def show_on_terminal() -> None:
    """Also print progress lines on stderr (once per process)."""
    if any(getattr(h, "segflow_terminal", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    handler.segflow_terminal = True
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def duration(seconds: float) -> str:
    """A duration as a person reads it: 42 s, 3 min 05 s, 2 h 07 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Countdown:
    """``done / total`` steps of one job, reported with the time the remaining steps will take at the average
    pace so far (steps of earlier attempts of a resumed job are counted, not timed). The first and the last
    step are always reported, the others when ``interval`` seconds have passed since the last line."""

    def __init__(self, what: str, total: int, done: int = 0, interval: float = 0.0, clock=time.monotonic):
        self.what, self.total, self.done, self.interval = what, total, done, interval
        self.clock = clock
        self.started, self.started_at = clock(), done
        self.last_line = None

    def time_left(self) -> float:
        return (self.clock() - self.started) / (self.done - self.started_at) * (self.total - self.done)

    def step(self, detail: str = "") -> None:
        self.done += 1
        now = self.clock()
        due = self.last_line is None or self.done == self.total or now - self.last_line >= self.interval
        if not due:
            return
        self.last_line = now
        eta = "" if self.done == self.total else f", about {duration(self.time_left())} left"
        detail = f" {detail}" if detail else ""
        log.info("%s %d/%d%s%s", self.what, self.done, self.total, detail, eta)


class Heartbeat:
    """A line at least every ``interval`` seconds while a long stage runs (an epoch, a validation), from a timer
    thread: one step (an iteration of a large network on a CPU, one large case) can take minutes. The stage
    says what it is doing with ``beat``; the line says that and the time since the stage began. Use it as a
    context manager: the thread lives inside the ``with`` block."""

    def __init__(self, what: str, interval: float | None = None, clock=time.monotonic):
        self.what, self.clock = what, clock
        self.interval = HEARTBEAT_S if interval is None else interval
        self.started = clock()
        self.doing = "starting"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.speak, name="segflow-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()

    def beat(self, doing: str) -> None:
        """What the stage is doing now (the next line says it)."""
        self.doing = doing

    def speak(self) -> None:
        while not self.stopped.wait(self.interval):
            log.info("%s: %s, %s so far", self.what, self.doing, duration(self.clock() - self.started))
