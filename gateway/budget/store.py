"""The counter-store interface the engine debits through, and the values it exchanges.

A store knows buckets, not policies: each ``Bucket`` carries its own key, amount and
cost, so ``memory://`` and ``redis://`` can decide alike without reading policy files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# Windows a bucket can count in. Rolling ones drain; calendar ones count per UTC period.
ROLLING = "rolling"
DAY = "day"
MONTH = "month"
INFLIGHT = "inflight"

ENFORCED_GROUP = 0  # group 0 refuses; every other group is one shadow policy


@dataclass(frozen=True, slots=True)
class Bucket:
    """One counter to debit: ``cost`` against ``amount`` in ``window``.

    ``key`` names the counter without its amount (so a changed amount keeps the spend)
    and without the calendar period (the store adds it from its own clock).
    """

    key: str
    metric: str
    window: str
    seconds: int  # the rolling window's length; unused by the others
    amount: int
    cost: int
    group: int = ENFORCED_GROUP
    expire_cost: int = 0  # what stays debited if the reservation expires unsettled


@dataclass(frozen=True, slots=True)
class BucketState:
    """How one bucket stood for one request.

    ``remaining`` is after the debit when the bucket's group was debited, else as found.
    ``retry_after`` is None when the cost can never fit; it is meaningless when ``fits``.
    """

    fits: bool
    remaining: int
    retry_after: float | None
    reset_seconds: float


@dataclass(frozen=True, slots=True)
class Reservation:
    admitted: bool  # every enforced bucket fitted, and all of them were debited
    states: tuple[BucketState, ...]  # one per bucket, in the order given


class CounterStore(Protocol):
    """Where budgets are counted. Every method raises ``StorageError`` when it cannot answer.

    ``now`` is epoch seconds from an injected clock, or None for the store's own time.
    """

    async def reserve(
        self, request_id: str, buckets: Sequence[Bucket], *, ttl: float, now: float | None
    ) -> Reservation:
        """Debit every group that fits (the enforced one first: if it does not, nothing)
        and record what was debited under ``request_id`` for ``ttl`` seconds."""
        ...

    async def settle(
        self, request_id: str, actual: Mapping[str, int], *, now: float | None
    ) -> bool:
        """Replace the reservation's cost per metric by ``actual`` (metrics absent keep
        theirs). False when nothing was reserved under that id (or it was settled)."""
        ...

    async def peek(self, buckets: Sequence[Bucket], *, now: float | None) -> list[BucketState]:
        """Where each bucket stands, debiting nothing."""
        ...

    async def aclose(self) -> None: ...
