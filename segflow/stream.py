"""Cases streamed through a prediction, as nnunetv2's ``-npp``/``-nps`` workers stream them: while the network
runs on case i, case i+1 is read and preprocessed and case i-1 exported, each in a thread of its own, at most
one case of each kind in flight (so at most three cases' arrays are held). The network's work and the
exports' resampling run in torch and the reading and preprocessing in SimpleITK, numpy and scipy, which all
release the GIL on large arrays: the threads overlap.

Where the network runs on the CPU it already keeps the job's cores busy, and work beside it only makes the
threads contend (measured: three 512 x 512 x 1 000 CTs predicted on 2 cores with 2 network threads took 714 s
streamed, 568 s one after the other). ``overlap=False`` does the same steps in the caller's thread, one case
at a time."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor


def overlaps(device, asked: bool | None = None) -> bool:
    """Whether cases stream beside the network: as ``asked``, by default where it runs on a GPU."""
    if asked is not None:
        return asked
    return getattr(device, "type", str(device)) == "cuda"


class Ahead:
    """``prepare(item)`` of the next item computed in a thread while the caller works on the current one
    (with ``overlap=False``, of each item when the caller asks for it)."""

    def __init__(self, prepare, items, overlap: bool = True):
        self.prepare, self.items, self.overlap = prepare, list(items), overlap
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="segflow-read")

    def __iter__(self):
        if not self.overlap:
            for item in self.items:
                yield self.prepare(item)
            return
        upcoming = self.submit(0)
        for index in range(len(self.items)):
            done, upcoming = upcoming, self.submit(index + 1)
            # Handed over from its box: neither this generator nor the future holds the case once the caller lets go.
            yield done.result().pop()

    def submit(self, index: int) -> Future | None:
        if index >= len(self.items):
            return None
        return self.pool.submit(lambda item: [self.prepare(item)], self.items[index])

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class Behind:
    """Calls run in a thread, one at a time: ``submit`` first waits for the previous call (raising its error),
    so the caller is at most one call ahead; ``wait`` waits for the last. With ``overlap=False`` a call runs
    at once, in the caller's thread."""

    def __init__(self, overlap: bool = True):
        self.overlap = overlap
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="segflow-export")
        self.pending: Future | None = None

    def submit(self, function, *args) -> None:
        self.wait()
        if not self.overlap:
            function(*args)
            return
        self.pending = self.pool.submit(function, *args)

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class Stream:
    """``with Stream(prepare, items) as stream``: ``stream.cases`` yields each item prepared ahead;
    ``stream.finish(function, *args)`` runs behind. On leaving, the last call behind is waited for (its error
    raised) unless the block itself failed. Loop over ``stream.cases`` itself, not through ``zip`` or
    ``enumerate``: they keep their last item, and with it a case's arrays, until the next one."""

    def __init__(self, prepare, items, overlap: bool = True):
        self.ahead, self.behind = Ahead(prepare, items, overlap), Behind(overlap)
        self.cases = iter(self.ahead)

    def finish(self, function, *args) -> None:
        self.behind.submit(function, *args)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        try:
            if error is None:
                self.behind.wait()
        finally:
            self.ahead.close()
            self.behind.close()
        return False
