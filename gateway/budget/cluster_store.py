"""The cluster-store interface the cluster directory links through, and what it returns.

A store keeps who is linked to whom, which (account, signal value) pairs it has seen, and
moves a cluster's budget counters when clusters merge. It never sees a clear signal
value: values arrive as SHA-256 hex (``gateway.identity.hash_value``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.values import value

# How long link data outlives its last use, seconds. A month, because linking is evidence
# gathered across a billing cycle: a ring that pauses a few weeks still meets its cluster
# when it comes back, while identifiers an attacker rotated away from lapse instead of
# growing storage for ever. Explicit links are pinned and never lapse (docs/clusters.md).
RETENTION = 30 * 86400.0

# One observed signal: (signal name, hashed value, max accounts or None for no cap).
SignalSeen = tuple[str, str, int | None]


@value
class Linked:
    """The cluster an account or link ended in, and the clusters merged into it."""

    cluster: str
    absorbed: tuple[str, ...] = ()
    saturated: tuple[str, ...] = ()  # signal names whose value just reached max accounts
    organizations: int = 1  # distinct organizations of its accounts (1 for a cluster of one)
    accounts: int = 1  # its accounts (1 for an account on its own)


@value
class ClusterInfo:
    """A cluster as an operator sees it. An account on its own is a cluster of one whose
    id is the account."""

    id: str
    members: tuple[str, ...]  # sorted
    organizations: int = 1  # distinct organizations of its accounts, up to the store's cap

    @property
    def size(self) -> int:
        return len(self.members)


@value
class Saturation:
    """A signal value shared by more accounts than its ``max_accounts``: it links no more."""

    signal: str
    value: str  # SHA-256 hex, as stored
    first_seen: float  # epoch seconds


class ClusterStore(Protocol):
    """Where clusters live. Every method raises ``StorageError`` when it cannot answer.

    ``now`` is epoch seconds from an injected clock, or None for the store's own time; it
    drains rolling budgets moved by a merge, so it must be the budget engine's clock.

    Link data lapses ``retention`` seconds after its last use (``retention=None``: the
    store's own): signal values when seen, an account's entry and its cluster's sets when
    the account is observed or merged. An explicit ``link`` pins its cluster and accounts,
    which then never lapse. Lapses run on the store's own time, never ``now``.

    A cluster's organizations are a set that only grows (a merge adds the absorbed
    cluster's; an unlink removes nothing, as spend stays) and stops at the store's cap:
    past it a cluster counts as "many". An account remembers its last organization, which
    it brings to any cluster it joins.
    """

    retention: float  # seconds link data outlives its last use, unless a call says otherwise

    async def observe(
        self,
        account: str,
        signals: Sequence[SignalSeen],
        *,
        now: float | None,
        organization: str | None = None,
        retention: float | None = None,
    ) -> Linked:
        """Record the pairs not yet recorded and the account's ``organization`` (None: not
        new), link as they say, and return the cluster with its organization count."""
        ...

    async def link(
        self,
        cluster: str,
        accounts: Sequence[str],
        *,
        now: float | None,
        retention: float | None = None,
    ) -> Linked:
        """Merge the accounts' clusters into ``cluster`` (a name nobody holds is created),
        and pin it and the accounts' entries."""
        ...

    async def unlink(self, account: str) -> str | None:
        """Make ``account`` a cluster of one; returns the cluster it left, if any."""
        ...

    async def cluster_of(self, account: str) -> ClusterInfo: ...

    async def members(self, cluster: str) -> ClusterInfo:
        """The cluster (an absorbed name answers for its survivor); no members if unknown."""
        ...

    async def saturated(self) -> list[Saturation]:
        """The values that stopped linking, oldest first (bounded)."""
        ...

    async def epoch(self) -> str | None:
        """The marker ``mark`` left, or None: the store is new, or lost its data."""
        ...

    async def mark(self, epoch: str) -> str:
        """Leave ``epoch`` as the marker unless one is there; returns the marker held."""
        ...
