"""Cycle collection paced by work done, for the long batch commands (replay, simulate).

CPython's collector runs after every 700 net new container objects, and every so often
scans every object alive. A full-scale replay keeps millions of objects alive (counters,
links, behaviour, the reorder window), so those scans took 13.4% of a replay worker's time
(py-spy --native, a 15 s sample of ``gateway replay`` on the 45-day ``--scale 1`` log). A
replay makes little cyclic garbage (nothing on its hot path raises), so while it runs the
automatic collector is off. Every ``every`` exchanges the young generations are collected
(what was made since the last time: a few milliseconds), and every ``full_every``-th of
those is a full collection: it scans every object alive, ~0.1 s per 150,000 objects here, seconds
for a full-scale worker's millions, so it must be rare. Measured on 150,000 lines of a
``--scale 0.02`` log: the first young collection found 40 unreachable objects, every
later one and every full one 0; the garbage the collector would have found is found, a
little later.
"""

from __future__ import annotations

import gc
from types import TracebackType

EVERY = 100_000  # exchanges between young collections: ~25 s of a full-scale worker
FULL_EVERY = 20  # young collections between full ones: ~8 min of one


class PacedCollection:
    """``with PacedCollection() as paced:`` then ``paced.tick()`` per exchange."""

    def __init__(self, every: int = EVERY, full_every: int = FULL_EVERY) -> None:
        self._every = every
        self._full_every = full_every
        self._count = 0
        self._was_enabled = True

    def __enter__(self) -> PacedCollection:
        self._was_enabled = gc.isenabled()
        gc.disable()
        return self

    def tick(self) -> None:
        self._count += 1
        if self._count % self._every == 0:
            full = self._count % (self._every * self._full_every) == 0
            gc.collect(2 if full else 1)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._was_enabled:
            gc.enable()
