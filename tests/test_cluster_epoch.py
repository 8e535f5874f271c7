"""A store that comes back empty gets the policy files' links again, on real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
import redis.asyncio

from gateway.budget.holder import PolicyHolder
from gateway.clusters import ClusterDirectory
from gateway.policy.model import ClusterConfig, Metric, Scope, Unit
from gateway.storage.budget_redis import RedisStore
from gateway.storage.connection import open_cluster_store, open_redis
from tests.budget.helpers import Clock, estimate, limit, policy
from tests.clusterkit import CARD, LINK_BY, policies, replica, seen, who
from tests.conftest import free_port

RING = policy("ring", limit(Metric.REQUESTS, 2, Unit.DAY), scope=Scope.CLUSTER)
LINKS = ClusterConfig(links={"ring-7": ("a1", "a2")}, link_by=LINK_BY)


async def test_file_links_apply_again_after_a_flush(
    redis_url: str, redis_client: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    async with (
        replica(redis_url, policies(RING, clusters=LINKS), clock) as one,
        replica(redis_url, policies(RING, clusters=LINKS), clock) as two,
    ):
        resets: list[str] = []
        one.directory.on_store_reset = lambda: resets.append("one")
        two.directory.on_store_reset = lambda: resets.append("two")
        await one.directory.ensure_links()
        await two.directory.ensure_links()
        await one.directory.maintain()
        assert resets == [] and await one.directory.members("ring-7") == ("a1", "a2")
        await redis_client.flushdb()
        assert await one.directory.members("ring-7") == ()
        with caplog.at_level(logging.WARNING, "gateway.clusters"):
            await one.directory.maintain()
            assert await one.directory.members("ring-7") == ("a1", "a2")
            # The other replica sees a marker it did not know, and forgets its cache too.
            await two.directory.maintain()
            await one.directory.maintain()
            await two.directory.maintain()
        assert resets == ["one", "two"]
        assert (one.directory.store_resets, two.directory.store_resets) == (1, 1)
        assert len(caplog.records) == 2 and "admin API" in caplog.records[0].getMessage()
        # The cluster budget (2 a day) applies to the linked accounts again.
        admitted = []
        for n, account in enumerate(("a1", "a2", "a1")):
            subject = await one.subject(account)
            assert subject.cluster == "ring-7"
            admitted.append((await one.engine.reserve(f"r{n}", subject, estimate(1))).admitted)
        assert admitted == [True, True, False]


async def test_run_reapplies_within_a_second(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    async with replica(redis_url, policies(RING, clusters=LINKS), Clock()) as one:
        await one.directory.ensure_links()
        task = asyncio.create_task(one.directory.run(interval=0.02))
        try:
            await redis_client.flushdb()
            for _ in range(100):  # a second at most
                await asyncio.sleep(0.01)
                if await one.directory.members("ring-7") == ("a1", "a2"):
                    break
            assert await one.directory.members("ring-7") == ("a1", "a2")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert one.directory.store_resets == 1


async def test_after_a_reset_pairs_are_recorded_again_at_once(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    card = seen(CARD, "c")
    async with replica(redis_url, policies(RING), Clock()) as one:
        await one.subject("a", card)
        await one.directory.maintain()
        await redis_client.flushdb()
        await one.directory.maintain()
        # Without the reset the pair cache would skip a's card for pair_ttl (300 s).
        await one.subject("a", card)
        assert (await one.subject("b", card)).cluster is not None


async def test_without_clusters_maintain_asks_nothing(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    async with replica(redis_url, policies(clusters=ClusterConfig()), Clock()) as one:
        await one.directory.ensure_links()
        await one.directory.maintain()
        assert await redis_client.dbsize() == 0


async def test_maintain_never_raises_without_storage(redis_url: str) -> None:
    down = RedisStore(open_redis(f"redis://127.0.0.1:{free_port()}/0"))
    holder = PolicyHolder(policies(RING, clusters=LINKS))
    directory = ClusterDirectory(open_cluster_store(down), holder)
    try:
        await directory.maintain()
        await directory.maintain()  # the breaker is open: not even asked
        assert directory.outage.down and directory.store_resets == 0
        subject = await directory.resolve(who("a1"), [])
        assert subject.cluster is None
    finally:
        await down.aclose()
