"""The Redis cluster store: linking, membership and budget merges in one Lua call each.

Its keys share the budget store's base (``gw:{b}:``): a merge moves budget counters in
the same atomic script that relinks accounts, so on Redis Cluster everything must sit
under one hash tag. Layout: ``lua/clusters.lua``; the why: docs/clusters.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.budget.cluster_store import RETENTION, ClusterInfo, Linked, Saturation, SignalSeen
from gateway.storage.budget_redis import GRACE, Client, lua
from gateway.storage.calls import CallLimit
from gateway.storage.registry import REGISTRY_LIFE

SATURATION_CAP = 1000  # saturated signal values kept for operators; oldest dropped first
# Organizations a cluster keeps: enough to tell a ring from a customer, bounded so a huge
# cluster's set stays small. A cluster at the cap counts as "many".
ORGANIZATION_CAP = 1000
_HELPERS = ("time", "clusters")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _now(now: float | None) -> str:
    return "" if now is None else repr(now)


class RedisClusterStore:
    """``ClusterStore`` on the budget store's Redis client and key base."""

    def __init__(
        self,
        client: Client,
        *,
        base: str,
        saturation_cap: int = SATURATION_CAP,
        organization_cap: int = ORGANIZATION_CAP,
        registry_life: float = REGISTRY_LIFE + GRACE,
        retention: float = RETENTION,
        limit: CallLimit | None = None,
    ) -> None:
        self.client = client
        self._limit = limit if limit is not None else CallLimit()
        self.retention = retention
        self._base = base
        self._saturation_cap = saturation_cap
        self._organization_cap = organization_cap
        self._registry_life = registry_life
        self._observe = client.register_script(lua(*_HELPERS, "observe"))
        self._link = client.register_script(lua(*_HELPERS, "link"))
        self._unlink = client.register_script(lua(*_HELPERS, "unlink"))
        self._members = client.register_script(lua(*_HELPERS, "members"))

    async def observe(
        self,
        account: str,
        signals: Sequence[SignalSeen],
        *,
        now: float | None,
        organization: str | None = None,
        retention: float | None = None,
    ) -> Linked:
        args: list[str | int | float] = [
            self._base,
            _now(now),
            repr(self._registry_life),
            account,
            self._saturation_cap,
            self._organization_cap,
            organization or "",
            self._life(retention),
        ]
        for name, value, cap in signals:
            args += [name, value, "" if cap is None else cap]
        reply = [_text(x) for x in await self._call(self._observe, args)]
        absorbed = int(reply[3])
        return Linked(
            reply[0],
            tuple(reply[4 : 4 + absorbed]),
            tuple(reply[4 + absorbed :]),
            organizations=int(reply[1]),
            accounts=max(1, int(reply[2])),
        )

    async def link(
        self,
        cluster: str,
        accounts: Sequence[str],
        *,
        now: float | None,
        retention: float | None = None,
    ) -> Linked:
        life, cap = repr(self._registry_life), self._organization_cap
        args: list[str | int | float] = [self._base, _now(now), life, cap, self._life(retention)]
        args += [cluster, *accounts]
        reply = [_text(x) for x in await self._call(self._link, args)]
        return Linked(
            reply[0], tuple(reply[3:]), organizations=int(reply[1]), accounts=int(reply[2])
        )

    async def unlink(self, account: str) -> str | None:
        left = _text(await self._call(self._unlink, [self._base, account]))
        return left or None

    async def cluster_of(self, account: str) -> ClusterInfo:
        return await self._info("account", account)

    async def members(self, cluster: str) -> ClusterInfo:
        return await self._info("cluster", cluster)

    async def saturated(self) -> list[Saturation]:
        found: list[Any] = await self._limit.run(
            lambda: self.client.zrange(self._base + "cx", 0, -1, withscores=True), "a lookup"
        )
        out = []
        for member, score in found:
            signal, _, value = _text(member).rpartition(":")
            out.append(Saturation(signal, value, float(score)))
        return out

    async def epoch(self) -> str | None:
        held = await self._limit.run(lambda: self.client.get(self._base + "ce"), "a lookup")
        return None if held is None else _text(held)

    async def mark(self, epoch: str) -> str:
        key = self._base + "ce"
        if await self._limit.run(lambda: self.client.set(key, epoch, nx=True), "a mark"):
            return epoch
        held = await self._limit.run(lambda: self.client.get(key), "a lookup")
        # Emptied between the two calls: the next check notices and marks it again.
        return epoch if held is None else _text(held)

    def _life(self, retention: float | None) -> str:
        return repr(self.retention if retention is None else retention)

    async def _info(self, kind: str, ident: str) -> ClusterInfo:
        reply = [_text(x) for x in await self._call(self._members, [self._base, kind, ident])]
        return ClusterInfo(reply[0], tuple(reply[2:]), int(reply[1]))

    async def _call(self, script: Any, args: Sequence[str | int | float]) -> Any:
        return await self._limit.run(
            lambda: script(keys=[self._base + "cn"], args=args), "a cluster lookup"
        )
