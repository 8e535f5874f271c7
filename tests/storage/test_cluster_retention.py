"""Link data lapses when unused and lives on when used, on Redis and in memory alike;
explicit links are pinned; rotated identifiers leave no key without a TTL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import redis.asyncio

from gateway.budget.cluster_store import ClusterInfo, ClusterStore, Linked
from gateway.budget.holder import PolicyHolder
from gateway.clusters import ClusterDirectory
from gateway.storage.budget_memory import MemoryStore
from gateway.storage.budget_redis import RedisStore
from gateway.storage.clusters_memory import MemoryClusterStore
from gateway.storage.clusters_redis import RedisClusterStore
from tests.budget.helpers import Clock
from tests.clusterkit import CARD, DEVICE, Ticks, policies, seen, who

LIFE = 0.5  # seconds; Redis expires on its own clock, so its half of a test sleeps
CARD_X, CARD_Y = ("header:card", "a" * 64, None), ("header:card", "b" * 64, None)
Wait = Callable[[float], Awaitable[None]]


@asynccontextmanager
async def both(redis_url: str) -> AsyncIterator[list[tuple[ClusterStore, Wait]]]:
    """A Redis store (waits really) and a memory store (waits on an injected clock)."""
    client = redis.asyncio.Redis.from_url(redis_url)
    ticks = Ticks()

    async def advance(seconds: float) -> None:
        ticks.now += seconds

    remote = RedisStore(client, prefix=f"r{uuid.uuid4().hex}")
    stores: list[tuple[ClusterStore, Wait]] = [
        (RedisClusterStore(client, base=remote.base, retention=LIFE), asyncio.sleep),
        (MemoryClusterStore(MemoryStore(), retention=LIFE, monotonic=ticks), advance),
    ]
    try:
        yield stores
    finally:
        await client.aclose()


async def _used_and_unused(store: ClusterStore, wait: Wait) -> tuple[Linked | ClusterInfo, ...]:
    now = Clock()()
    await store.observe("a", [CARD_X], now=now, organization="o1")
    pair = await store.observe("b", [CARD_X], now=now, organization="o2")
    await store.observe("c", [CARD_Y], now=now)
    await wait(LIFE * 0.6)
    await store.observe("a", [CARD_X], now=now)  # a is used; b and c are not
    await wait(LIFE * 0.6)
    # b's entry lapsed: it is on its own, and left out of the cluster that still names it.
    a, b = await store.cluster_of("a"), await store.cluster_of("b")
    # c's value lapsed with it: a newcomer with it finds nobody to join.
    d = await store.observe("d", [CARD_Y], now=now)
    # b comes back with the value it shared: the cluster takes it back, spend and all.
    back = await store.observe("b", [CARD_X], now=now)
    b_again = await store.cluster_of("b")
    await wait(LIFE * 1.2)
    return (
        pair,
        a,
        b,
        d,
        back,
        b_again,
        await store.cluster_of("a"),
        await store.members("linked-1"),
    )


async def test_a_used_key_lives_on_and_an_unused_one_lapses(redis_url: str) -> None:
    async with both(redis_url) as stores:
        answers = [await _used_and_unused(store, wait) for store, wait in stores]
    assert answers[0] == answers[1]
    assert answers[0] == (
        Linked("linked-1", ("b", "a"), organizations=2, accounts=2),
        ClusterInfo("linked-1", ("a",), 2),
        ClusterInfo("b", ("b",), 1),
        Linked("d"),
        Linked("linked-1", ("b",), organizations=2, accounts=2),
        ClusterInfo("linked-1", ("a", "b"), 2),
        ClusterInfo("a", ("a",), 1),
        ClusterInfo("linked-1", (), 1),
    )


async def _explicit(store: ClusterStore, wait: Wait) -> tuple[ClusterInfo, ...]:
    now = Clock()()
    await store.link("ring-1", ["a", "b"], now=now)
    await store.observe("a", [CARD_X], now=now, organization="o1")
    await store.observe("c", [CARD_X], now=now, organization="o2")  # joins by the card
    await store.link("linked-9", ["e", "f"], now=now)  # an id nobody holds: named
    await wait(LIFE * 1.2)
    return (
        await store.members("ring-1"),
        await store.cluster_of("c"),
        await store.members("linked-9"),
    )


async def test_explicit_links_never_lapse(redis_url: str) -> None:
    async with both(redis_url) as stores:
        answers = [await _explicit(store, wait) for store, wait in stores]
    assert answers[0] == answers[1]
    # c joined by a card and lapsed; the organizations it brought stay, as spend would.
    assert answers[0] == (
        ClusterInfo("ring-1", ("a", "b"), 2),
        ClusterInfo("c", ("c",), 1),
        ClusterInfo("linked-9", ("e", "f"), 1),
    )


async def test_an_admin_link_into_a_generated_cluster_pins_it(redis_url: str) -> None:
    async with both(redis_url) as stores:
        answers = []
        for store, wait in stores:
            now = Clock()()
            await store.observe("a", [CARD_X], now=now)
            linked = await store.observe("b", [CARD_X], now=now)
            await store.link(linked.cluster, ["c"], now=now)
            # A pinned cluster merging into a larger unpinned one pins the survivor.
            for n in range(4):
                await store.observe(f"y{n}", [CARD_Y], now=now)
            merged = await store.observe("c", [CARD_Y], now=now)
            assert merged.absorbed == (linked.cluster,)
            await wait(LIFE * 1.2)
            answers.append(await store.cluster_of("c"))
    assert answers[0] == answers[1] == ClusterInfo("linked-2", ("c",), 1)


async def test_rotated_identifiers_leave_no_link_key_without_a_ttl(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    """Rotating accounts and card fingerprints, some sharing a card, through the directory:
    every key but the epoch marker lapses."""
    store = RedisStore(redis.asyncio.Redis.from_url(redis_url))
    directory = ClusterDirectory(
        RedisClusterStore(store.client, base=store.base), _holder(), clock=Clock()
    )
    try:
        for n in range(300):
            signals = [seen(CARD, f"card-{n // 3}"), seen(DEVICE, f"device-{n}")]
            await directory.resolve(who(f"acct-{n}", f"org-{n}"), signals)
        keys = [k async for k in redis_client.scan_iter(count=1000)]
        ttls = {k.decode(): await redis_client.pttl(k) for k in keys}
    finally:
        await store.aclose()
    kinds = {k.removeprefix(store.base).split(":")[0] for k in ttls}
    assert kinds == {"ca", "cm", "co", "cg", "cs", "cq", "ce"}
    forever = sorted(k for k, ttl in ttls.items() if ttl < 0)
    # The marker, and the sequence of generated ids (reused ids would merge strangers).
    assert forever == [store.base + "ce", store.base + "cq"]


def _holder() -> PolicyHolder:
    return PolicyHolder(policies())


async def test_an_active_account_keeps_its_keys_through_the_directory(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    """The directory re-sends cached pairs well before they would lapse."""
    store = RedisStore(redis.asyncio.Redis.from_url(redis_url))
    clusters = RedisClusterStore(store.client, base=store.base)
    directory = ClusterDirectory(clusters, _holder(), clock=Clock(), retention=LIFE)
    card = seen(CARD, "kept")
    try:
        for _ in range(6):
            await directory.resolve(who("a"), [card])
            await directory.resolve(who("b"), [card])
            await asyncio.sleep(LIFE * 0.3)
        assert len(await directory.members((await directory.cluster_of("a")).id)) == 2
        await asyncio.sleep(LIFE * 1.2)
        assert await redis_client.keys(store.base + "c[smago]:*") == []
    finally:
        await store.aclose()


async def test_the_memory_store_forgets_rotated_identifiers() -> None:
    ticks = Ticks()
    store = MemoryClusterStore(MemoryStore(), retention=10.0, monotonic=ticks)
    now = Clock()()
    for n in range(1000):
        card = ("header:card", f"{n // 2:064x}", None)
        await store.observe(f"acct-{n}", [card], now=now, organization=f"org-{n}")
        ticks.now += 0.01
    assert (await store.cluster_of("acct-999")).members == ("acct-998", "acct-999")
    ticks.now += 10.0
    await store.observe("z", [], now=now)
    held = vars(store)
    for name in ("_cluster", "_members", "_seen", "_organization", "_organizations"):
        assert held[name] == {}, name
    assert held["_queue"] == [] and held["_queued"] == {} and held["_deadline"] == {}


async def test_redis_keys_carry_the_retention_or_are_pinned(
    redis_client: redis.asyncio.Redis,
) -> None:
    store = RedisStore(redis_client)
    clusters = RedisClusterStore(redis_client, base=store.base, retention=100.0)
    now = Clock()()
    await clusters.link("ring-1", ["a"], now=now)
    await clusters.observe("a", [CARD_X], now=now, organization="o1")
    await clusters.observe("b", [CARD_X], now=now, organization="o2")
    await clusters.observe("c", [CARD_Y], now=now, organization="o3")
    ttl = {
        k.decode().removeprefix(store.base): await redis_client.pttl(k)
        async for k in redis_client.scan_iter()
    }
    pinned = {k for k, t in ttl.items() if t == -1}
    assert pinned == {"cn", "ca:a", "cm:ring-1", "co:ring-1"}  # b joined by a card
    assert all(99_000 < t <= 100_000 for k, t in ttl.items() if k not in pinned)
    assert {k.split(":")[0] for k in ttl if k not in pinned} == {"ca", "cg", "cs"}
