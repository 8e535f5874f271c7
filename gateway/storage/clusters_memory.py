"""The in-process cluster store (``memory://``): ``lua/clusters.lua`` and its scripts,
step for step, merging budgets in the ``MemoryStore`` it shares with the engine."""

from __future__ import annotations

import time
from collections.abc import Sequence

from gateway.budget.cluster_store import ClusterInfo, Linked, Saturation, SignalSeen
from gateway.storage.budget_memory import MemoryStore
from gateway.storage.clusters_redis import ORGANIZATION_CAP, SATURATION_CAP
from gateway.storage.registry import quote_id

SCAN_FOR_ANCHOR = 16  # members looked at for one not manually unlinked, as ZRANGE 0 15


class MemoryClusterStore:
    """``ClusterStore`` in one process's memory."""

    def __init__(
        self,
        budget: MemoryStore,
        *,
        saturation_cap: int = SATURATION_CAP,
        organization_cap: int = ORGANIZATION_CAP,
    ) -> None:
        self._budget = budget
        self._saturation_cap = saturation_cap
        self._organization_cap = organization_cap
        self._cluster: dict[str, str] = {}  # account → cluster id (absent: on its own)
        self._members: dict[str, set[str]] = {}
        self._named: set[str] = set()
        self._aliases: dict[str, str] = {}  # absorbed name → survivor
        self._unlinked: set[str] = set()
        self._sequence = 0
        self._seen: dict[tuple[str, str], list[str]] = {}  # (signal, value) → accounts in order
        self._saturation: dict[str, float] = {}  # "signal:value" → first seen
        self._organization: dict[str, str] = {}  # account → its last organization
        self._organizations: dict[str, set[str]] = {}  # cluster of several → organizations

    async def observe(
        self,
        account: str,
        signals: Sequence[SignalSeen],
        *,
        now: float | None,
        organization: str | None = None,
    ) -> Linked:
        now = time.time() if now is None else now
        cluster = self._cluster_of(account)
        if organization:
            self._organization[account] = organization
            if cluster != account:
                self._add_organization(cluster, organization)
        free = account not in self._unlinked
        absorbed: list[str] = []
        saturated: list[str] = []
        for name, value, cap in signals:
            seen = self._seen.setdefault((name, value), [])
            if account in seen:
                continue
            if cap is not None and len(seen) >= cap:
                if self._saturate(f"{name}:{value}", now):
                    saturated.append(name)
                continue
            anchor = None
            if free:
                anchor = next((m for m in seen[:SCAN_FOR_ANCHOR] if m not in self._unlinked), None)
            seen.append(account)
            if anchor is not None:
                cluster = self._join(cluster, self._cluster_of(anchor), now, absorbed)
        counted = 1 if cluster == account else self._count(cluster)
        return Linked(cluster, tuple(absorbed), tuple(saturated), counted)

    async def link(self, cluster: str, accounts: Sequence[str], *, now: float | None) -> Linked:
        now = time.time() if now is None else now
        cluster = self._canonical(cluster)
        if cluster not in self._named and not self._members.get(cluster):
            self._named.add(cluster)
        absorbed: list[str] = []
        for account in accounts:
            self._unlinked.discard(account)
            cluster = self._join(cluster, self._cluster_of(account), now, absorbed)
        return Linked(cluster, tuple(absorbed), organizations=self._count(cluster))

    async def unlink(self, account: str) -> str | None:
        self._unlinked.add(account)
        cluster = self._cluster.pop(account, None)
        if cluster is not None:
            self._members.get(cluster, set()).discard(account)
            if not self._size(cluster):
                self._organizations.pop(cluster, None)
        return cluster

    async def cluster_of(self, account: str) -> ClusterInfo:
        cluster = self._cluster_of(account)
        members = tuple(sorted(self._members.get(cluster) or {cluster}))
        return ClusterInfo(cluster, members, self._count(cluster))

    async def members(self, cluster: str) -> ClusterInfo:
        cluster = self._canonical(cluster)
        members = tuple(sorted(self._members.get(cluster, ())))
        return ClusterInfo(cluster, members, self._count(cluster))

    async def saturated(self) -> list[Saturation]:
        out = []
        for member, first in sorted(self._saturation.items(), key=lambda kv: (kv[1], kv[0])):
            signal, _, value = member.rpartition(":")
            out.append(Saturation(signal, value, first))
        return out

    def _cluster_of(self, account: str) -> str:
        return self._cluster.get(account, account)

    def _size(self, cluster: str) -> int:
        return len(self._members.get(cluster, ()))

    def _count(self, cluster: str) -> int:
        return max(1, len(self._organizations.get(cluster, ())))

    def _add_organization(self, cluster: str, organization: str) -> None:
        # Only accumulates, up to the cap: a cluster at the cap counts as "many" for good.
        held = self._organizations.setdefault(cluster, set())
        if len(held) < self._organization_cap:
            held.add(organization)

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

    def _join(self, a: str, b: str, now: float, absorbed: list[str]) -> str:
        if a == b:
            return a
        if not ({a, b} & self._named) and self._size(a) == 0 and self._size(b) == 0:
            self._sequence += 1
            cluster = f"linked-{self._sequence}"
            self._adopt(cluster, a, now, absorbed)
            self._adopt(cluster, b, now, absorbed)
            return cluster
        if self._outranks(b, a):
            a, b = b, a
        self._adopt(a, b, now, absorbed)
        return a

    def _adopt(self, keep: str, lose: str, now: float, absorbed: list[str]) -> None:
        accounts = self._members.pop(lose, set())
        alone = not accounts and lose not in self._named
        if alone:
            accounts = {lose}
        for account in accounts:
            self._cluster[account] = keep
            self._members.setdefault(keep, set()).add(account)
        if alone:
            organizations = [self._organization[lose]] if lose in self._organization else []
        else:
            organizations = sorted(self._organizations.pop(lose, ()))
        for organization in organizations:
            self._add_organization(keep, organization)
        if lose in self._named:
            self._named.discard(lose)
            self._aliases[lose] = keep
        self._budget.merge_cluster(quote_id(lose), quote_id(keep), now)
        absorbed.append(lose)
