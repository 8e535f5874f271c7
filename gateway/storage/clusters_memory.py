"""The in-process cluster store (``memory://``): ``lua/clusters.lua`` and its scripts,
step for step, merging budgets in the ``MemoryStore`` it shares with the engine.

Keys lapse as Redis keys do: each holds a deadline on ``monotonic`` (Redis expires on its
own clock, never the engine's ``now``), a key without one is pinned, and every call first
drops what lapsed, so the store stays as small as the Redis one.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from typing import Any

from gateway.budget.cluster_store import RETENTION, ClusterInfo, Linked, Saturation, SignalSeen
from gateway.storage.budget_memory import MemoryStore
from gateway.storage.clusters_redis import ORGANIZATION_CAP, SATURATION_CAP
from gateway.storage.registry import quote_id

SCAN_FOR_ANCHOR = 16  # members looked at for one not manually unlinked, as ZRANGE 0 15

# A key as clusters.lua names it: (kind, id, signal value or ""). Kinds: "ca" an account's
# cluster, "cg" its organization, "cm" and "co" a cluster's accounts and organizations, "cs"
# the accounts seen with (signal, value).
Key = tuple[str, str, str]


class MemoryClusterStore:
    """``ClusterStore`` in one process's memory."""

    def __init__(
        self,
        budget: MemoryStore,
        *,
        saturation_cap: int = SATURATION_CAP,
        organization_cap: int = ORGANIZATION_CAP,
        retention: float = RETENTION,
        monotonic: Callable[[], float] = time.monotonic,
        founder_names: bool = False,
    ) -> None:
        self.retention = retention
        # Replays split by linked component name clusters alike (docs/performance.md):
        # after the account that founded one, not by a count every cluster shares.
        self._founded: dict[str, int] | None = {} if founder_names else None
        self._budget = budget
        self._saturation_cap = saturation_cap
        self._organization_cap = organization_cap
        self._monotonic = monotonic
        self._cluster: dict[str, str] = {}  # account → cluster id (absent: on its own)
        self._members: dict[str, set[str]] = {}  # never empty, as Redis drops empty sets
        self._named: set[str] = set()
        self._aliases: dict[str, str] = {}  # absorbed name → survivor
        self._unlinked: set[str] = set()
        self._sequence = 0
        self._seen: dict[tuple[str, str], list[str]] = {}  # (signal, value) → accounts in order
        self._saturation: dict[str, float] = {}  # "signal:value" → first seen
        self._organization: dict[str, str] = {}  # account → its last organization
        self._organizations: dict[str, set[str]] = {}  # cluster of several → organizations
        self._epoch: str | None = None
        self._deadline: dict[Key, float] = {}  # absent: pinned (or no such key)
        # One heap entry per key, at the deadline it had when queued; a key refreshed since
        # is queued again when that entry comes up, so the heap holds about one per key.
        self._queue: list[tuple[float, Key]] = []
        self._queued: dict[Key, float] = {}
        self._tables: dict[str, dict[str, Any]] = {
            "ca": self._cluster,
            "cg": self._organization,
            "cm": self._members,
            "co": self._organizations,
        }

    async def observe(
        self,
        account: str,
        signals: Sequence[SignalSeen],
        *,
        now: float | None,
        organization: str | None = None,
        retention: float | None = None,
    ) -> Linked:
        self._lapse()
        life = self.retention if retention is None else retention
        now = time.time() if now is None else now
        cluster = self._cluster_of(account)
        if organization:
            self._organization[account] = organization
            if cluster != account:
                self._add_organization(cluster, organization)
        self._expire(("cg", account, ""), life)
        free = account not in self._unlinked
        absorbed: list[str] = []
        saturated: list[str] = []
        for name, value, cap in signals:
            seen = self._seen.get((name, value), [])
            first = None
            if account in seen:
                if cluster == account:
                    first = self._anchor(seen, account, free)
            elif cap is not None and len(seen) >= cap:
                if self._saturate(f"{name}:{value}", now):
                    saturated.append(name)
            else:
                first = self._anchor(seen, account, free)
                self._seen.setdefault((name, value), []).append(account)
            self._expire(("cs", name, value), life)
            if first is not None:
                cluster = self._join(cluster, self._cluster_of(first), now, life, absorbed)
        if self._deadline.get(("ca", account, "")) is not None:
            self._expire(("ca", account, ""), life)
        if cluster != account:
            self._keep_sets(cluster, self._pinned(cluster), life)
        counted = 1 if cluster == account else self._count(cluster)
        size = 1 if cluster == account else max(1, self._size(cluster))
        return Linked(cluster, tuple(absorbed), tuple(saturated), counted, size)

    async def link(
        self,
        cluster: str,
        accounts: Sequence[str],
        *,
        now: float | None,
        retention: float | None = None,
    ) -> Linked:
        self._lapse()
        life = self.retention if retention is None else retention
        now = time.time() if now is None else now
        cluster = self._canonical(cluster)
        if cluster not in self._named and not self._size(cluster):
            self._named.add(cluster)
        absorbed: list[str] = []
        for account in accounts:
            self._unlinked.discard(account)
            cluster = self._join(cluster, self._cluster_of(account), now, life, absorbed)
        self._keep_sets(cluster, True, life)
        for account in accounts:
            self._deadline.pop(("ca", account, ""), None)
        return Linked(
            cluster,
            tuple(absorbed),
            organizations=self._count(cluster),
            accounts=max(1, self._size(cluster)),
        )

    async def unlink(self, account: str) -> str | None:
        self._lapse()
        self._unlinked.add(account)
        cluster = self._cluster.get(account)
        self._drop(("ca", account, ""))
        if cluster is not None:
            members = self._members.get(cluster, set())
            members.discard(account)
            if not members:
                self._drop(("cm", cluster, ""))
                self._drop(("co", cluster, ""))
        return cluster

    async def cluster_of(self, account: str) -> ClusterInfo:
        self._lapse()
        cluster = self._cluster_of(account)
        return ClusterInfo(cluster, self._listed(cluster) or (cluster,), self._count(cluster))

    async def members(self, cluster: str) -> ClusterInfo:
        self._lapse()
        cluster = self._canonical(cluster)
        return ClusterInfo(cluster, self._listed(cluster), self._count(cluster))

    async def saturated(self) -> list[Saturation]:
        out = []
        for member, first in sorted(self._saturation.items(), key=lambda kv: (kv[1], kv[0])):
            signal, _, value = member.rpartition(":")
            out.append(Saturation(signal, value, first))
        return out

    async def epoch(self) -> str | None:
        return self._epoch

    async def mark(self, epoch: str) -> str:
        if self._epoch is None:
            self._epoch = epoch
        return self._epoch

    def _cluster_of(self, account: str) -> str:
        return self._cluster.get(account, account)

    def _listed(self, cluster: str) -> tuple[str, ...]:
        """Its accounts, less those whose entry lapsed (on their own again)."""
        held = self._members.get(cluster, ())
        return tuple(sorted(a for a in held if self._cluster_of(a) == cluster))

    def _anchor(self, seen: list[str], account: str, free: bool) -> str | None:
        if not free:
            return None
        first = (m for m in seen[:SCAN_FOR_ANCHOR] if m != account and m not in self._unlinked)
        return next(first, None)

    def _size(self, cluster: str) -> int:
        return len(self._members.get(cluster, ()))

    def _count(self, cluster: str) -> int:
        return max(1, len(self._organizations.get(cluster, ())))

    def _add_organization(self, cluster: str, organization: str) -> None:
        # Only accumulates, up to the cap: a cluster at the cap counts as "many" for good.
        held = self._organizations.get(cluster, set())
        if len(held) < self._organization_cap:
            held.add(organization)
            self._organizations[cluster] = held

    def _canonical(self, cluster: str) -> str:
        for _ in range(32):
            if cluster not in self._aliases:
                break
            cluster = self._aliases[cluster]
        return cluster

    def _saturate(self, member: str, now: float) -> bool:
        if member in self._saturation:
            return False
        self._saturation[member] = now
        ordered = sorted(self._saturation.items(), key=lambda kv: (kv[1], kv[0]))
        for old, _ in ordered[: max(0, len(ordered) - self._saturation_cap)]:
            del self._saturation[old]
        return True

    def _outranks(self, a: str, b: str) -> bool:
        if (a in self._named) != (b in self._named):
            return a in self._named
        if self._size(a) != self._size(b):
            return self._size(a) > self._size(b)
        return a < b

    def _join(self, a: str, b: str, now: float, life: float, absorbed: list[str]) -> str:
        if a == b:
            return a
        if not ({a, b} & self._named) and self._size(a) == 0 and self._size(b) == 0:
            cluster = self._new_name(b)
            self._adopt(cluster, a, now, life, absorbed)
            self._adopt(cluster, b, now, life, absorbed)
            return cluster
        if self._outranks(b, a):
            a, b = b, a
        self._adopt(a, b, now, life, absorbed)
        return a

    def _new_name(self, founder: str) -> str:
        """``linked-<n>`` as clusters.lua names it, or ``linked-<k>-<founder>`` for the
        k-th cluster ``founder`` (the account first seen with the shared value) started."""
        if self._founded is None:
            self._sequence += 1
            return f"linked-{self._sequence}"
        count = self._founded[founder] = self._founded.get(founder, 0) + 1
        return f"linked-{count}-{founder}"

    def _adopt(self, keep: str, lose: str, now: float, life: float, absorbed: list[str]) -> None:
        pin = self._pinned(keep) or self._pinned(lose)
        accounts = self._members.get(lose, set())
        self._drop(("cm", lose, ""))
        alone = not accounts and lose not in self._named
        if alone:
            accounts = {lose}
        for account in accounts:
            entry: Key = ("ca", account, "")
            pinned = account in self._cluster and entry not in self._deadline
            self._cluster[account] = keep
            if not pinned:
                self._expire(entry, life)
            self._members.setdefault(keep, set()).add(account)
        if alone:
            organizations = [self._organization[lose]] if lose in self._organization else []
        else:
            organizations = sorted(self._organizations.get(lose, ()))
            self._drop(("co", lose, ""))
        for organization in organizations:
            self._add_organization(keep, organization)
        if lose in self._named:
            self._named.discard(lose)
            self._aliases[lose] = keep
        self._budget.merge_cluster(quote_id(lose), quote_id(keep), now)
        self._keep_sets(keep, pin, life)
        absorbed.append(lose)

    # Lapses: what PTTL, PEXPIRE, PERSIST and DEL do to the keys above.

    def _table(self, kind: str) -> dict[str, Any]:
        return self._tables[kind]

    def _exists(self, key: Key) -> bool:
        kind, ident, value = key
        if kind == "cs":
            return (ident, value) in self._seen
        return ident in self._tables[kind]

    def _pinned(self, cluster: str) -> bool:
        key: Key = ("cm", cluster, "")
        return self._exists(key) and key not in self._deadline

    def _keep_sets(self, cluster: str, pin: bool, life: float) -> None:
        for key in (("cm", cluster, ""), ("co", cluster, "")):
            if pin:
                self._deadline.pop(key, None)
            else:
                self._expire(key, life)

    def _expire(self, key: Key, life: float) -> None:
        """PEXPIRE: a key that exists lapses ``life`` seconds from now."""
        if not self._exists(key):
            return
        deadline = self._monotonic() + life
        self._deadline[key] = deadline
        queued = self._queued.get(key)
        if queued is None or queued > deadline:
            heapq.heappush(self._queue, (deadline, key))
            self._queued[key] = deadline

    def _drop(self, key: Key) -> None:
        """DEL."""
        kind, ident, value = key
        self._deadline.pop(key, None)
        if kind == "cs":
            self._seen.pop((ident, value), None)
        else:
            self._table(kind).pop(ident, None)

    def _lapse(self) -> None:
        """Drop every key whose deadline has passed, as Redis does on its own."""
        now = self._monotonic()
        while self._queue and self._queue[0][0] <= now:
            when, key = heapq.heappop(self._queue)
            if self._queued.get(key) != when:
                continue  # a later entry for the same key replaced this one
            del self._queued[key]
            deadline = self._deadline.get(key)
            if deadline is None:
                continue  # pinned or dropped since
            if deadline <= now:
                self._drop(key)
            else:
                heapq.heappush(self._queue, (deadline, key))
                self._queued[key] = deadline
