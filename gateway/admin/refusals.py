"""The gateway's own refusals over the last hour, per minute, by reason and refusing policy.

``RefusalHistory.record`` takes the proxy's answer (``gateway.answers.Answer``) once per
request, as the metrics do, and counts the gateway's refusals in one slot per minute,
60 of them, in memory. Its keys are the metrics' label values (a reason, and the policy of
a rate-limit refusal): bounded, never an account id. Upstream failures are not refusals
and are left to the metrics.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from gateway.answers import UPSTREAM_FAILURES, Answer

MINUTES = 60
MAX_SERIES = 200  # (reason, policy) pairs kept; past it, new ones are counted as "other"
OTHER = ("other", "")


@dataclass(frozen=True, slots=True)
class Series:
    reason: str
    policy: str
    per_minute: tuple[int, ...]  # oldest first; the last is the minute now running

    @property
    def total(self) -> int:
        return sum(self.per_minute)


class RefusalHistory:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.time
        self._slots: dict[int, Counter[tuple[str, str]]] = {}
        self._known: set[tuple[str, str]] = set()

    def _minute(self) -> int:
        return int(self._clock() // 60)

    def record(self, answer: Answer) -> None:
        reason = answer.reason
        if reason is None or reason in UPSTREAM_FAILURES:
            return
        key = (reason.value, answer.policy)
        if key not in self._known:
            if len(self._known) >= MAX_SERIES:
                key = OTHER
            self._known.add(key)
        minute = self._minute()
        slot = self._slots.get(minute)
        if slot is None:
            slot = self._slots[minute] = Counter()
            for old in [m for m in self._slots if m <= minute - MINUTES]:
                del self._slots[old]
        slot[key] += 1

    def series(self) -> tuple[float, list[Series]]:
        """When the oldest minute started (epoch seconds) and every series with a refusal
        in the last hour, the largest total first."""
        now = self._minute()
        first = now - MINUTES + 1
        counts: dict[tuple[str, str], list[int]] = {}
        for minute, slot in self._slots.items():
            if minute < first:
                continue
            for key, count in slot.items():
                counts.setdefault(key, [0] * MINUTES)[minute - first] += count
        found = [Series(reason, policy, tuple(c)) for (reason, policy), c in counts.items()]
        found.sort(key=lambda s: (-s.total, s.reason, s.policy))
        return float(first * 60), found
