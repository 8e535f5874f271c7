"""Storage outages: a breaker that skips a dead store a moment, one log line per interval."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("gateway.budget")


class Outage:
    """Tracks whether the store is down, and says so at most once per ``log_interval``.

    After a failure the store is skipped for ``probe_interval`` seconds, so a Redis that
    hangs does not add its timeout to every request; the first request after that tries it.
    """

    def __init__(
        self,
        *,
        log_interval: float = 60.0,
        probe_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log_interval = log_interval
        self.probe_interval = probe_interval
        self._monotonic = monotonic
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._logged_at: float | None = None
        self._suppressed = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def skip(self) -> bool:
        """True while the breaker is open: use the fallback without asking the store."""
        return self.down and self._monotonic() < self._retry_at

    def failed(self, what: str, exc: BaseException) -> None:
        now = self._monotonic()
        if self._down_since is None:
            self._down_since = now
        self._retry_at = now + self.probe_interval
        if self._logged_at is not None and now - self._logged_at < self.log_interval:
            self._suppressed += 1
            return
        log.warning(
            "Counter store unavailable (%s: %s); %d more failures since the last line.",
            what,
            exc,
            self._suppressed,
        )
        self._logged_at, self._suppressed = now, 0

    def answered(self) -> None:
        if self._down_since is None:
            return
        log.warning(
            "Counter store answers again after %.1f s.", self._monotonic() - self._down_since
        )
        self._down_since, self._logged_at, self._suppressed = None, None, 0
