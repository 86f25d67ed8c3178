"""Exclusive wall time per stage of a running program, by wrapping the functions that make up each stage.

Standard library only: bench/prediction_stages.py loads it into segflow's Python and into nnunetv2's
environment alike. A stage's time excludes the stages called inside it (a label map taken from logits that
are resampled channel by channel as the argmax asks for them counts the resampling under "resampling"), so
the stages add up to the wrapped time without counting anything twice.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class StageClock:
    """Seconds per stage; with ``sample_s``, also the process's peak resident memory while each stage was the
    innermost one under way (sampled every ``sample_s`` seconds by a thread; "other" when none was)."""

    def __init__(self, sample_s: float | None = 0.005):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.peak_bytes: dict[str, int] = {}
        self._running: list[list] = []  # [stage, started] of the stages under way, innermost last
        self._started = time.perf_counter()
        if sample_s:
            threading.Thread(target=self._sample, args=(sample_s,), daemon=True).start()

    def _sample(self, interval: float) -> None:
        while True:
            running = self._running
            self._note(running[-1][0] if running else "other")
            time.sleep(interval)

    def _note(self, stage: str) -> None:
        self.peak_bytes[stage] = max(self.peak_bytes.get(stage, 0), resident_bytes())

    def timed(self, stage: str, function):
        """``function`` counted under ``stage`` while it runs (less the stages it calls)."""

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            now = time.perf_counter()
            if self._running:
                self._pause(self._running[-1], now)
            self._running.append([stage, now])
            try:
                return function(*args, **kwargs)
            finally:
                self._note(stage)  # a stage shorter than the sampling interval gets its figure too
                now = time.perf_counter()
                self._pause(self._running.pop(), now)
                self.calls[stage] = self.calls.get(stage, 0) + 1
                if self._running:
                    self._running[-1][1] = now

        return wrapper

    def _pause(self, running: list, now: float) -> None:
        stage, started = running
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - started

    def wrap(self, owner, name: str, stage: str) -> None:
        """Replace ``owner.name`` (a module's function or a class's method) by its timed self."""
        setattr(owner, name, self.timed(stage, getattr(owner, name)))

    def wrap_property(self, owner: type, name: str, stage: str) -> None:
        """A property whose value is a function (nnunetv2's resampling functions): the function it returns, timed."""
        original = getattr(owner, name)
        setattr(owner, name, property(lambda instance: self.timed(stage, original.fget(instance))))

    def save(self, path: str) -> None:
        """The stages' seconds, their call counts, their peak resident bytes and the whole time since the clock
        was made, as JSON."""
        total = time.perf_counter() - self._started
        figures = {"seconds": self.seconds, "calls": self.calls, "peak_bytes": self.peak_bytes, "total_s": total}
        with open(path, "w") as handle:
            json.dump(figures, handle, indent=1)
