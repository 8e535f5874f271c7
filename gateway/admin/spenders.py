"""Who spent the most tokens today, as this replica saw it: a bounded heavy-hitters tally.

The request path already knows, when an exchange ends, who asked (the admission's subject,
its cluster resolved) and what it used (the usage record). ``Spenders.record`` is a usage
hook that adds those tokens to one space-saving table per scope, in memory: no storage
call, and at most ``capacity`` ids per scope however many accounts there are. The admin
API reads the tables and asks storage for the shared day's counters of the top ids only
when someone asks (``gateway.admin.dashboard``).

Space-saving (Metwally et al., 2005): a new id in a full table takes the place of the
smallest count and inherits it as its possible overcount (``error``). Every id whose true
tally exceeds total / capacity is in the table, and ``tokens - error`` never overstates
what an id spent. The tables start again at each UTC midnight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.admission import Admission
from gateway.metering import UsageRecord
from gateway.policy.model import Scope

CAPACITY = 100  # ids kept per scope: the top ten are exact unless the tail is very flat
DAY = 86_400


@dataclass(frozen=True, slots=True)
class Spender:
    scope_id: str
    tokens: int  # this replica's tally today; at most ``error`` too high
    error: int


class SpaceSaving:
    """The top ids by weight, in ``capacity`` slots."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._counts: dict[str, int] = {}
        self._errors: dict[str, int] = {}

    def add(self, key: str, weight: int) -> None:
        if key in self._counts:
            self._counts[key] += weight
            return
        floor = 0
        if len(self._counts) >= self.capacity:
            smallest = min(self._counts, key=self._counts.__getitem__)
            floor = self._counts.pop(smallest)
            del self._errors[smallest]
        self._counts[key] = floor + weight
        self._errors[key] = floor

    def top(self, n: int) -> list[Spender]:
        ranked = sorted(self._counts.items(), key=lambda item: (-item[1], item[0]))
        return [Spender(key, count, self._errors[key]) for key, count in ranked[:n]]

    def __len__(self) -> int:
        return len(self._counts)


class Spenders:
    """Today's top spenders by scope (account, organization, linked cluster)."""

    def __init__(self, capacity: int = CAPACITY, clock: Callable[[], float] | None = None) -> None:
        self.capacity = capacity
        self._clock = clock or time.time
        self._day = self._today()
        self._tables = {scope: SpaceSaving(capacity) for scope in Scope}

    def _today(self) -> int:
        return int(self._clock() // DAY)

    @property
    def day_started_at(self) -> float:
        """The UTC midnight the tallies count from (epoch seconds)."""
        return float(self._day * DAY)

    def add(self, scope: Scope, scope_id: str, tokens: int) -> None:
        if tokens <= 0:
            return
        today = self._today()
        if today != self._day:
            self._day = today
            self._tables = {scope: SpaceSaving(self.capacity) for scope in Scope}
        self._tables[scope].add(scope_id, tokens)

    def top(self, scope: Scope, n: int) -> list[Spender]:
        if self._today() != self._day:
            return []
        return self._tables[scope].top(n)

    async def record(self, record: UsageRecord, admission: Admission | None) -> None:
        """A usage hook: an admitted exchange's tokens, for each scope it was counted in.
        A linked cluster only: an account on its own is already in the accounts' table."""
        if admission is None or not admission.decision.admitted:
            return
        tokens = record.usage.tokens
        subject = admission.caller.subject
        self.add(Scope.ACCOUNT, subject.account, tokens)
        if subject.organization is not None:
            self.add(Scope.ORGANIZATION, subject.organization, tokens)
        if subject.cluster is not None and not subject.cluster_exempt:
            self.add(Scope.CLUSTER, subject.cluster, tokens)
