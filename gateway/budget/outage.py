"""Storage outages: a breaker that skips a dead store a moment, one log line per interval.

Busy is not down (``StorageBusy`` never reaches here: the request is shed). A refused or
broken connection opens the breaker at once; a call that timed out opens it only after
``timeouts_to_open`` in a row, since a store slow under a burst still answers the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("gateway.budget")

Listener = Callable[[str, bool], None]  # (kind of the failure or "", store up now)


class Outage:
    """Tracks whether the store is down, and says so at most once per ``log_interval``.

    After the breaker opens the store is skipped for ``probe_interval`` seconds, so a Redis
    that hangs does not add its timeout to every request; the first request after that
    tries it. ``listener`` hears each failure (its kind) and each change of state: the
    metrics' storage gauge and error counter.
    """

    def __init__(
        self,
        *,
        log_interval: float = 60.0,
        probe_interval: float = 1.0,
        timeouts_to_open: int = 3,
        monotonic: Callable[[], float] = time.monotonic,
        listener: Listener | None = None,
    ) -> None:
        self.log_interval = log_interval
        self.probe_interval = probe_interval
        self.timeouts_to_open = timeouts_to_open
        self.listener = listener
        self._monotonic = monotonic
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._logged_at: float | None = None
        self._suppressed = 0
        self._timeouts = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def skip(self) -> bool:
        """True while the breaker is open: use the fallback without asking the store."""
        return self.down and self._monotonic() < self._retry_at

    def failed(self, what: str, exc: BaseException) -> None:
        kind = str(getattr(exc, "kind", "down"))
        if kind == "busy":
            self.busy()  # back-pressure: counted, never an outage, whoever reports it
            return
        if self.listener is not None:
            self.listener(kind, not self.down)
        now = self._monotonic()
        if kind == "timeout" and not self.down:
            self._timeouts += 1
            if self._timeouts < self.timeouts_to_open:
                self._say(now, what, exc, "timed out")
                return
        if self._down_since is None:
            self._down_since = now
            if self.listener is not None:
                self.listener("", False)
        self._retry_at = now + self.probe_interval
        self._say(now, what, exc, "unavailable")

    def busy(self) -> None:
        """A call shed for want of a free connection: counted, never an outage."""
        if self.listener is not None:
            self.listener("busy", not self.down)

    def answered(self) -> None:
        self._timeouts = 0
        if self._down_since is None:
            return
        log.warning(
            "Counter store answers again after %.1f s.", self._monotonic() - self._down_since
        )
        self._down_since, self._logged_at, self._suppressed = None, None, 0
        if self.listener is not None:
            self.listener("", True)

    def _say(self, now: float, what: str, exc: BaseException, state: str) -> None:
        if self._logged_at is not None and now - self._logged_at < self.log_interval:
            self._suppressed += 1
            return
        log.warning(
            "Counter store %s (%s: %s); %d more failures since the last line.",
            state,
            what,
            exc,
            self._suppressed,
        )
        self._logged_at, self._suppressed = now, 0
