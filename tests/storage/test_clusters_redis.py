"""The cluster stores: Redis keys and merges, and memory:// linking and merging alike."""

from __future__ import annotations

import uuid
from typing import Any

import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.budget.cluster_store import ClusterStore
from gateway.budget.decision import Subject
from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.policy.model import Metric, Scope, Unit
from gateway.storage.budget_memory import MemoryStore
from gateway.storage.budget_redis import RedisStore
from gateway.storage.clusters_memory import MemoryClusterStore
from gateway.storage.clusters_redis import RedisClusterStore
from gateway.storage.connection import open_cluster_store
from tests.budget.helpers import Clock, estimate, limit, policy, policy_set

BUDGET = policy_set(
    policy(
        "ring",
        limit(Metric.TOKENS, 5000, Unit.DAY),
        limit(Metric.TOKENS, 900, Unit.MINUTE),
        limit(Metric.REQUESTS, 4, Unit.MONTH),
        limit(Metric.CONCURRENT, 3),
        scope=Scope.CLUSTER,
    )
)
ODD = "ring 7:{x}/ü%"


def on(account: str, cluster: str) -> Subject:
    return Subject(account, "o", None if cluster == account else cluster, {"model": "m"})


async def test_keys_share_the_budget_hash_tag_and_odd_ids_are_safe(
    redis_client: redis.asyncio.Redis,
) -> None:
    store = RedisStore(redis_client, prefix="t")
    clusters = open_cluster_store(store)
    assert isinstance(clusters, RedisClusterStore)
    engine = BudgetEngine(store, PolicyHolder(BUDGET))  # Redis TIME, as the stores are
    await clusters.link(ODD, ["a:1", "b{2}"], now=None)
    assert (await engine.reserve("r1", on("a:1", ODD), estimate(300))).admitted
    lone = await clusters.observe("c 3", [("header:x", "ab" * 32, None)], now=None)
    assert lone.cluster == "c 3"
    assert (await engine.reserve("r2", on("c 3", "c 3"), estimate(200))).admitted
    joined = await clusters.observe("c 3", [("header:y", "cd" * 32, None)], now=None)
    assert joined.cluster == "c 3"  # nobody else has that value
    linked = await clusters.observe("b{2}", [("header:y", "cd" * 32, None)], now=None)
    assert (linked.cluster, linked.absorbed) == (ODD, ("c 3",))
    keys = [k.decode() for k in await redis_client.keys("*")]
    assert keys and all(k.startswith("t:{b}:") for k in keys)
    statuses = await engine.usage(Scope.CLUSTER, ODD)
    # In-flight slots stay where they were taken: their settles will release them there.
    assert [s.limit.amount - s.remaining for s in statuses] == [500, 500, 2, 1]
    info = await clusters.cluster_of("c 3")
    assert (info.id, info.members) == (ODD, ("a:1", "b{2}", "c 3"))


async def test_a_merge_drains_each_rolling_level_at_its_own_rate(
    redis_client: redis.asyncio.Redis,
) -> None:
    clock = Clock()
    store = RedisStore(redis_client)
    clusters = open_cluster_store(store)
    engine = BudgetEngine(store, PolicyHolder(BUDGET), clock=clock)
    assert (await engine.reserve("r1", on("a", "a"), estimate(900))).admitted
    clock.advance(30)  # 900/minute drains 15 a second: a is at 450
    assert (await engine.reserve("r2", on("b", "b"), estimate(300))).admitted
    clock.advance(10)  # a at 300, b at 150
    linked = await clusters.link("pair", ["a", "b"], now=clock())
    assert linked.cluster == "pair"
    [_, minute, *_] = await engine.usage(Scope.CLUSTER, "pair")
    assert minute.remaining == 900 - 450


async def _stores(
    redis_url: str, organization_cap: int = 2
) -> tuple[list[ClusterStore], list[BudgetEngine], Any]:
    client = redis.asyncio.Redis.from_url(redis_url)
    clock = Clock()
    memory = MemoryStore()
    remote = RedisStore(client, prefix=f"eq{uuid.uuid4().hex}")
    # A cap of 2 organizations, so random merges run into it.
    stores: list[ClusterStore] = [
        MemoryClusterStore(memory, organization_cap=organization_cap),
        RedisClusterStore(client, base=remote.base, organization_cap=organization_cap),
    ]
    engines = [
        BudgetEngine(s, PolicyHolder(BUDGET), clock=clock, reservation_ttl=120)
        for s in (memory, remote)
    ]
    return stores, engines, (client, clock)


ACCOUNTS = ["a", "b", "c", "d", "e"]
observe = st.tuples(
    st.just("observe"),
    st.sampled_from(ACCOUNTS),
    st.lists(st.tuples(st.sampled_from(["s1", "s2"]), st.sampled_from(["v1", "v2"])), max_size=2),
    st.sampled_from([None, "o1", "o2", "o3"]),
)
link = st.tuples(
    st.just("link"),
    st.sampled_from(["n1", "n2"]),
    st.lists(st.sampled_from(ACCOUNTS), min_size=1, max_size=3),
)
unlink = st.tuples(st.just("unlink"), st.sampled_from(ACCOUNTS))
reserve = st.tuples(st.just("reserve"), st.sampled_from(ACCOUNTS), st.integers(0, 700))
advance = st.tuples(st.just("advance"), st.sampled_from([1.0, 20.0, 3600.0, 86400.0 * 40]))


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.one_of(observe, link, unlink, reserve, advance), max_size=30))
async def test_memory_and_redis_link_and_merge_alike(
    redis_url: str, ops: list[tuple[Any, ...]]
) -> None:
    stores, engines, (client, clock) = await _stores(redis_url)
    caps = {"s1": 2, "s2": None}
    try:
        for n, op in enumerate(ops):
            if op[0] == "observe":
                signals = [(s, v * 32, caps[s]) for s, v in op[2]]
                got = [
                    await s.observe(op[1], signals, now=clock(), organization=op[3]) for s in stores
                ]
            elif op[0] == "link":
                got = [await s.link(op[1], op[2], now=clock()) for s in stores]
            elif op[0] == "unlink":
                got = [await s.unlink(op[1]) for s in stores]
            elif op[0] == "reserve":
                got = []
                for s, e in zip(stores, engines, strict=True):
                    cluster = (await s.cluster_of(op[1])).id
                    got.append(await e.reserve(f"r{n}", on(op[1], cluster), estimate(op[2])))
            else:
                clock.advance(op[1])
                continue
            assert got[0] == got[1], op
        for account in ACCOUNTS:
            infos = [await s.cluster_of(account) for s in stores]
            assert infos[0] == infos[1]
            usage = [await e.usage(Scope.CLUSTER, infos[0].id) for e in engines]
            assert usage[0] == usage[1]
        assert await stores[0].saturated() == await stores[1].saturated()
    finally:
        await client.aclose()


async def test_the_cluster_store_shares_the_budget_store(redis_client: redis.asyncio.Redis) -> None:
    remote = RedisStore(redis_client, prefix="t")
    clusters = open_cluster_store(remote)
    assert isinstance(clusters, RedisClusterStore) and clusters.client is remote.client
    assert isinstance(open_cluster_store(MemoryStore()), MemoryClusterStore)


async def test_organizations_follow_merges_unlinks_and_stop_at_the_cap(redis_url: str) -> None:
    stores, _, (client, clock) = await _stores(redis_url, organization_cap=3)
    card, device = [("header:card", "c" * 64, None)], [("header:device", "d" * 64, None)]
    try:
        for store in stores:
            alone = await store.observe("a", card, now=clock(), organization="o1")
            assert (alone.cluster, alone.organizations) == ("a", 1)
            pair = await store.observe("b", card, now=clock(), organization="o2")
            assert pair.organizations == 2
            # The same organization twice, and an account without one, add nothing.
            assert (
                await store.observe("c", card, now=clock(), organization="o2")
            ).organizations == 2
            assert (await store.observe("d", card, now=clock())).organizations == 2
            # A second cluster of one organization merges in through a shared device: a
            # cluster of one brings the organization it was last seen with.
            await store.observe("x", device, now=clock(), organization="o3")
            await store.observe("y", device, now=clock(), organization="o3")
            merged = await store.observe("d", device, now=clock())
            assert merged.absorbed and merged.organizations == 3
            # At the cap (3 here) a fourth organization counts as nothing more: "many".
            await store.observe("z", card, now=clock(), organization="o4")
            assert (await store.cluster_of("a")).organizations == 3
            # An unlinked account is on its own (1); the cluster keeps what it counted.
            assert await store.unlink("a") == merged.cluster
            assert (await store.cluster_of("a")).organizations == 1
            assert (await store.members(merged.cluster)).organizations == 3
            # An explicit link brings the linked accounts' organizations.
            linked = await store.link("ring-1", ["a", "p"], now=clock())
            assert linked.organizations == 1  # p was never seen with an organization
            assert (await store.observe("p", [], now=clock(), organization="o9")).organizations == 2
    finally:
        await client.aclose()
