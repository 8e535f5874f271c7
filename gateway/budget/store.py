"""The counter-store interface the engine debits through, and the values it exchanges.

A store knows buckets, not policies: each ``Bucket`` carries its own key, amount and
cost, so ``memory://`` and ``redis://`` can decide alike without reading policy files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from gateway.values import value

# Windows a bucket can count in. Rolling ones drain; calendar ones count per UTC period.
ROLLING = "rolling"
DAY = "day"
MONTH = "month"
INFLIGHT = "inflight"

ENFORCED_GROUP = 0  # group 0 refuses; every other group is one shadow policy


@value
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


@value
class BucketState:
    """How one bucket stood for one request.

    ``remaining`` is after the debit when the bucket's group was debited, else as found.
    ``retry_after`` is None when the cost can never fit; it is meaningless when ``fits``.
    """

    fits: bool
    remaining: int
    retry_after: float | None
    reset_seconds: float


@value
class Reservation:
    admitted: bool  # every enforced bucket fitted, and all of them were debited
    states: tuple[BucketState, ...]  # one per bucket, in the order given
    # The request id held a reservation already (a repeated call): nothing was debited
    # again, and ``states`` is empty.
    repeated: bool = False


@value
class Upkeep:
    """What one replica's upkeep tick found."""

    replicas: int  # replicas that heartbeat recently, this one included
    reaped: int  # reservations of dead replicas expired
    swept: int  # reservations expired because their time passed


class CounterStore(Protocol):
    """Where budgets are counted. Every method raises ``StorageError`` when it cannot answer.

    ``now`` is epoch seconds from an injected clock, or None for the store's own time.
    ``owner`` is the replica holding a reservation: its upkeep extends it, and when the
    replica stops heartbeating any other replica's upkeep expires it.
    """

    async def reserve(
        self,
        request_id: str,
        buckets: Sequence[Bucket],
        *,
        ttl: float,
        now: float | None,
        owner: str = "",
        force: bool = False,
    ) -> Reservation:
        """Debit every group that fits (the enforced one first: if it does not, nothing)
        and record what was debited under ``request_id`` for ``ttl`` seconds. Idempotent:
        a request id that holds a reservation debits nothing again (``repeated``).
        ``force`` debits whatever the limits say (an exchange already running)."""
        ...

    async def settle(
        self, request_id: str, actual: Mapping[str, int], *, now: float | None, owner: str = ""
    ) -> bool:
        """Replace the reservation's cost per metric by ``actual`` (metrics absent keep
        theirs), also after it expired. False when nothing was reserved under that id (or
        it was settled)."""
        ...

    async def extend(
        self, request_ids: Sequence[str], *, ttl: float, now: float | None, owner: str = ""
    ) -> int:
        """Push the expiry of these running reservations ``ttl`` seconds past ``now``; one
        that expired meanwhile (a stall, a freeze) takes its concurrency slot back."""
        ...

    async def release(
        self, request_id: str, *, ttl: float, now: float | None, owner: str = ""
    ) -> bool:
        """Undo a reserve whose answer was lost, wholly (its request too), and make sure a
        reserve of that id still on its way does nothing when it arrives."""
        ...

    async def upkeep(self, owner: str, *, dead_after: float, now: float | None) -> Upkeep:
        """Heartbeat for ``owner``; expire the reservations of replicas silent for
        ``dead_after`` seconds and those whose time passed."""
        ...

    async def debit(
        self, debits: Sequence[tuple[Bucket, int]], *, now: float | None, batch: str
    ) -> None:
        """Add each cost to its bucket unconditionally (what was admitted without the
        store; a negative cost corrects one written back earlier). Once per ``batch``: a
        repeat after a lost answer does nothing."""
        ...

    async def peek(self, buckets: Sequence[Bucket], *, now: float | None) -> list[BucketState]:
        """Where each bucket stands, debiting nothing."""
        ...

    async def aclose(self) -> None: ...
