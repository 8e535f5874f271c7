"""Builders for cluster tests: replicas on real Redis, policy sets with a clusters section."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import redis.asyncio

from gateway.budget.decision import Subject
from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.clusters import ClusterDirectory
from gateway.identity import hash_value
from gateway.policy.model import ClusterConfig, IdentityConfig, LinkSignal, Policy, PolicySet
from gateway.storage.budget_redis import RedisStore
from gateway.storage.connection import open_cluster_store
from tests.budget.helpers import Clock

CARD = LinkSignal(header="x-card")
DEVICE = LinkSignal(header="x-device")


class Ticks:
    """A settable monotonic clock for the directory's cache."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


LINK_BY = (CARD, DEVICE)


def policies(*items: Policy, clusters: ClusterConfig | None = None) -> PolicySet:
    config = clusters if clusters is not None else ClusterConfig(link_by=LINK_BY)
    return PolicySet("test", (), IdentityConfig(), items, clusters=config)


def seen(signal: LinkSignal, value: str) -> tuple[str, str]:
    return (signal.name, hash_value(signal.name, value))


def who(account: str, organization: str | None = "o1", **attributes: str) -> Subject:
    return Subject(account, organization, attributes={"model": "m", **attributes})


@dataclass
class Replica:
    """One gateway replica: its own Redis client, engine and directory."""

    store: RedisStore
    engine: BudgetEngine
    directory: ClusterDirectory
    holder: PolicyHolder
    ticks: Ticks = field(default_factory=Ticks)

    async def subject(self, account: str, *signals: tuple[str, str], **kw: str) -> Subject:
        return await self.directory.resolve(who(account, **kw), signals)


@asynccontextmanager
async def replica(
    redis_url: str,
    policy_set: PolicySet,
    clock: Clock,
    *,
    prefix: str = "gw",
    client_class: Callable[..., redis.asyncio.Redis] = redis.asyncio.Redis.from_url,
) -> AsyncIterator[Replica]:
    store = RedisStore(client_class(redis_url), prefix=prefix)
    holder = PolicyHolder(policy_set)
    ticks = Ticks()
    engine = BudgetEngine(store, holder, clock=clock)
    directory = ClusterDirectory(open_cluster_store(store), holder, clock=clock, monotonic=ticks)
    try:
        yield Replica(store, engine, directory, holder, ticks)
    finally:
        await store.aclose()
