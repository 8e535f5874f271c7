"""A long run's progress on a terminal: one line, rewritten at most twice a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO

SHOWN_EVERY = 0.5  # seconds


class Progress:
    """Where a run is, exchanges so far and how fast, and the time left once the share
    done is known. ``for_terminal`` gives one only when stderr is a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self.shown = 0.0

    @staticmethod
    def for_terminal(quiet: bool = False) -> Progress | None:
        return None if quiet or not sys.stderr.isatty() else Progress(sys.stderr)

    def show(self, where: str, exchanges: int, share: float | None = None) -> None:
        """``share``: of the whole run done so far, 0 to 1, if known."""
        now = time.monotonic()
        if now - self.shown < SHOWN_EVERY:
            return
        self.shown = now
        spent = max(now - self.started, 1e-9)
        line = f"{where}: {exchanges:,} exchanges, {exchanges / spent:,.0f}/s"
        if share is not None and 0.001 < share < 1:
            line += f", about {_duration(spent * (1 - share) / share)} left"
        self.out.write(f"\r{line[:118]:<118}")
        self.out.flush()

    def done(self) -> None:
        self.out.write("\r" + " " * 118 + "\r")
        self.out.flush()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
