"""Linked-account clusters on real Redis, with two replicas that share it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from gateway.clusters import ClusterDirectory
from gateway.identity import hash_value
from gateway.policy.model import ClusterConfig, LinkSignal, Metric, Scope, Unit
from gateway.storage.budget_redis import RedisStore
from gateway.storage.connection import open_cluster_store, open_redis
from tests.budget.helpers import Clock, estimate, limit, policy
from tests.clusterkit import CARD, DEVICE, LINK_BY, Replica, policies, replica, seen, who
from tests.conftest import free_port

CLUSTER_BUDGET = policy(
    "ring",
    limit(Metric.TOKENS, 1000, Unit.DAY),
    limit(Metric.REQUESTS, 60, Unit.MINUTE),
    scope=Scope.CLUSTER,
)


@pytest.fixture
async def pair(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> AsyncIterator[tuple[Replica, Replica]]:
    clock = Clock()
    async with (
        replica(redis_url, policies(CLUSTER_BUDGET), clock) as one,
        replica(redis_url, policies(CLUSTER_BUDGET), clock) as two,
    ):
        yield one, two


async def spend(
    r: Replica, request_id: str, subject_account: str, tokens: int, *signals: tuple[str, str]
) -> None:
    subject = await r.subject(subject_account, *signals)
    decision = await r.engine.reserve(request_id, subject, estimate(tokens, 0))
    assert decision.admitted


async def used(r: Replica, cluster: str) -> dict[str, int]:
    statuses = await r.engine.usage(Scope.CLUSTER, cluster)
    return {s.limit.text: s.limit.amount - s.remaining for s in statuses}


async def test_an_account_linked_to_nobody_is_a_cluster_of_one(
    pair: tuple[Replica, Replica],
) -> None:
    one, _ = pair
    subject = await one.subject("a1", seen(CARD, "card-1"))
    assert subject.cluster is None and subject.scope_id(Scope.CLUSTER) == "a1"
    info = await one.directory.cluster_of("a1")
    assert (info.id, info.members, info.size) == ("a1", ("a1",), 1)


async def test_links_are_transitive_across_two_replicas(pair: tuple[Replica, Replica]) -> None:
    one, two = pair
    await one.subject("a", seen(CARD, "card-1"))
    b = await one.subject("b", seen(CARD, "card-1"))
    c = await two.subject("c", seen(DEVICE, "dev-9"))
    b_again = await two.subject("b", seen(DEVICE, "dev-9"))
    assert b.cluster is not None and b.cluster.startswith("linked-")
    assert b_again.cluster == b.cluster and c.cluster is None
    info = await one.directory.cluster_of("c")
    assert (info.id, info.members) == (b.cluster, ("a", "b", "c"))
    # Replica one cached "a" before c joined; within the cache TTL it may say so, then not.
    one.ticks.now += 2
    assert (await one.subject("a")).cluster == b.cluster
    assert (await two.subject("c")).cluster == b.cluster


async def test_a_merge_keeps_what_both_clusters_spent(pair: tuple[Replica, Replica]) -> None:
    one, two = pair
    card1, card2, device = seen(CARD, "c1"), seen(CARD, "c2"), seen(DEVICE, "d")
    await spend(one, "r1", "a", 100, card1)
    await spend(one, "r2", "b", 200, card1)
    await spend(two, "r3", "c", 300, card2)
    await spend(two, "r4", "d", 50, card2)
    x = (await one.directory.cluster_of("a")).id
    y = (await two.directory.cluster_of("c")).id
    assert x != y
    assert await used(one, x) == {"1000/day": 300, "60/minute": 2}
    assert await used(one, y) == {"1000/day": 350, "60/minute": 2}
    # b and c share a device: replica two merges the clusters, spend and all.
    await spend(two, "r5", "b", 1, device)
    await spend(two, "r6", "c", 1, device)
    merged = (await one.directory.cluster_of("d")).id
    assert merged in (x, y)
    absorbed = y if merged == x else x
    assert await used(two, merged) == {"1000/day": 652, "60/minute": 6}
    assert await used(one, absorbed) == {"1000/day": 0, "60/minute": 0}
    assert (await one.directory.cluster_of("a")).members == ("a", "b", "c", "d")


async def test_spend_of_an_account_alone_follows_it_into_a_cluster(
    pair: tuple[Replica, Replica],
) -> None:
    one, two = pair
    await spend(one, "r1", "a", 400)  # no signal: a cluster of one, counted as "a"
    await spend(two, "r2", "b", 100, seen(CARD, "k"))
    await spend(one, "r3", "a", 10, seen(CARD, "k"))
    cluster = (await one.directory.cluster_of("a")).id
    assert await used(one, cluster) == {"1000/day": 510, "60/minute": 3}
    assert await used(one, "a") == {"1000/day": 0, "60/minute": 0}


async def test_a_shared_address_stops_linking_past_max_accounts(
    redis_url: str, redis_client: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    nat = LinkSignal(ipv4_prefix=24, ipv6_prefix=56, max_accounts=3)
    config = ClusterConfig(link_by=(nat,))
    address = (nat.name, hash_value(nat.name, "198.51.100.0/24"))
    async with (
        replica(redis_url, policies(CLUSTER_BUDGET, clusters=config), Clock()) as one,
        replica(redis_url, policies(CLUSTER_BUDGET, clusters=config), Clock()) as two,
    ):
        with caplog.at_level(logging.WARNING, "gateway.clusters"):
            for n in range(10):
                await (one if n % 2 else two).subject(f"u{n}", address)
        linked = await one.directory.cluster_of("u0")
        assert linked.members == ("u0", "u1", "u2")
        for n in range(3, 10):
            assert (await two.directory.cluster_of(f"u{n}")).members == (f"u{n}",)
        [saturation] = await one.directory.saturated()
        assert (saturation.signal, saturation.value) == address
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "client_ip:24:56" in lines[0]
        assert address[1] not in lines[0]


async def test_a_named_link_keeps_its_name_and_apply_is_idempotent(
    pair: tuple[Replica, Replica],
) -> None:
    one, two = pair
    config = ClusterConfig(links={"ring-7": ("a1", "a2")}, link_by=LINK_BY)
    await one.directory.apply_links(config)
    await spend(two, "r1", "a3", 100, seen(CARD, "z"))
    await spend(two, "r2", "a4", 100, seen(CARD, "z"))
    await spend(two, "r3", "a2", 5, seen(DEVICE, "q"))
    await spend(two, "r4", "a4", 5, seen(DEVICE, "q"))
    info = await one.directory.cluster_of("a3")
    assert (info.id, info.members) == ("ring-7", ("a1", "a2", "a3", "a4"))
    assert await used(one, "ring-7") == {"1000/day": 210, "60/minute": 4}
    await two.directory.apply_links(config)
    await one.directory.apply_links(config)
    assert await one.directory.members("ring-7") == ("a1", "a2", "a3", "a4")


async def test_unlink_leaves_spend_and_keeps_signals_from_relinking(
    pair: tuple[Replica, Replica],
) -> None:
    one, two = pair
    card = seen(CARD, "shared")
    await spend(one, "r1", "a", 100, card)
    await spend(one, "r2", "b", 100, card)
    cluster = (await one.directory.cluster_of("a")).id
    assert await one.directory.unlink("b") == cluster
    assert (await one.subject("b", card)).cluster is None
    assert await used(one, cluster) == {"1000/day": 200, "60/minute": 2}
    two.ticks.now += 10
    assert (await two.subject("b", card, seen(DEVICE, "new"))).cluster is None
    await spend(two, "r3", "c", 1, card)  # a newcomer still joins the cluster
    assert await one.directory.members(cluster) == ("a", "c")
    info = await one.directory.link(cluster, "b")  # an explicit link overrules the unlink
    assert info.members == ("a", "b", "c")


async def test_exempt_organizations_and_attributes_are_never_linked_or_limited(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    tight = policy("ring", limit(Metric.REQUESTS, 1, Unit.DAY), scope=Scope.CLUSTER)
    config = ClusterConfig(
        link_by=LINK_BY, exempt_organizations=("partner",), exempt_attribute=("tier", "internal")
    )
    card = seen(CARD, "corporate-card")
    async with replica(redis_url, policies(tight, clusters=config), Clock()) as one:
        for n in range(5):
            subject = await one.directory.resolve(who(f"p{n}", "partner"), [card])
            assert subject.cluster_exempt and subject.scope_id(Scope.CLUSTER) is None
            assert (await one.engine.reserve(f"p{n}", subject, estimate(1))).admitted
        staff = await one.subject("s1", card, tier="internal")
        assert staff.cluster_exempt
        assert (await one.engine.reserve("s1", staff, estimate(1))).admitted
        assert (await one.directory.cluster_of("p0")).members == ("p0",)
        # The same card from ordinary accounts still links them, and the limit holds.
        first = await one.subject("x1", card)
        assert (await one.engine.reserve("x1", first, estimate(1))).admitted
        second = await one.subject("x2", card)
        assert second.cluster is not None
        assert not (await one.engine.reserve("x2", second, estimate(1))).admitted


async def commands(client: redis.asyncio.Redis) -> dict[str, int]:
    """Calls per command since the server started (commands run by scripts included)."""
    stats = await client.info("commandstats")
    return {name: int(value["calls"]) for name, value in stats.items() if "info" not in name}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


async def test_the_common_path_costs_no_extra_round_trip(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    """A repeated request runs exactly the commands it would run with no clusters at all."""
    signals = (seen(CARD, "c"), seen(DEVICE, "d"))
    async with (
        replica(redis_url, policies(CLUSTER_BUDGET), Clock()) as linked,
        replica(redis_url, policies(CLUSTER_BUDGET), Clock(), prefix="plain") as plain,
    ):

        async def with_clusters(n: int) -> None:
            subject = await linked.directory.resolve(who("a"), signals)
            assert (await linked.engine.reserve(f"l{n}", subject, estimate(10))).admitted

        async def without_clusters(n: int) -> None:
            assert (await plain.engine.reserve(f"p{n}", who("a"), estimate(10))).admitted

        await with_clusters(0)  # learns the cluster and records the pairs
        await without_clusters(0)
        before = await commands(redis_client)
        await with_clusters(1)
        cost = delta(before, await commands(redis_client))
        before = await commands(redis_client)
        await without_clusters(1)
        baseline = delta(before, await commands(redis_client))
        assert cost == baseline and cost["cmdstat_evalsha"] == 1
        # Past the cache TTL, one more round trip learns the cluster again.
        linked.ticks.now += 2
        before = await commands(redis_client)
        await with_clusters(2)
        assert delta(before, await commands(redis_client))["cmdstat_evalsha"] == 2
        # A new signal value costs one round trip too; then it is known.
        before = await commands(redis_client)
        await linked.directory.resolve(who("a"), (seen(CARD, "another"),))
        await linked.directory.resolve(who("a"), (seen(CARD, "another"),))
        assert delta(before, await commands(redis_client))["cmdstat_evalsha"] == 1


async def test_without_storage_a_request_keeps_the_last_known_cluster(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    card = seen(CARD, "c")
    async with replica(redis_url, policies(CLUSTER_BUDGET), Clock()) as one:
        await one.subject("a", card)
        known = (await one.subject("b", card)).cluster
        down = RedisStore(open_redis(f"redis://127.0.0.1:{free_port()}/0"))
        directory = ClusterDirectory(open_cluster_store(down), one.holder, monotonic=one.ticks)
        try:
            assert (await directory.resolve(who("b"), [card])).cluster is None  # on its own
        finally:
            await down.aclose()
        one.directory.store = open_cluster_store(down)  # the same replica loses Redis
        one.ticks.now += 5
        assert (await one.subject("b", card)).cluster == known
