"""Clusters count their organizations, on real Redis with two replicas, and a
``min_organizations`` policy limits a ring of many organizations, never one organization."""

from __future__ import annotations

from dataclasses import replace

import redis.asyncio

from gateway.policy.model import Metric, Scope, Unit
from tests.budget.helpers import Clock, estimate, limit, policy
from tests.clusterkit import CARD, DEVICE, policies, replica, seen, who

LINKED = policy("linked", limit(Metric.REQUESTS, 1000, Unit.DAY), scope=Scope.CLUSTER)
RINGS = replace(
    policy("rings", limit(Metric.REQUESTS, 3, Unit.DAY), scope=Scope.CLUSTER),
    min_organizations=3,
)


async def test_organizations_are_counted_across_merges_and_replicas(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    clock = Clock()
    async with (
        replica(redis_url, policies(LINKED), clock) as one,
        replica(redis_url, policies(LINKED), clock) as two,
    ):
        a = await one.directory.resolve(who("a", "o1"), [seen(CARD, "k1")])
        assert (a.cluster, a.cluster_organizations) == (None, 1)
        b = await one.directory.resolve(who("b", "o2"), [seen(CARD, "k1")])
        assert b.cluster is not None and b.cluster_organizations == 2
        await two.directory.resolve(who("c", "o3"), [seen(CARD, "k2")])
        d = await two.directory.resolve(who("d", "o3"), [seen(CARD, "k2")])
        assert d.cluster_organizations == 1  # two accounts, one organization
        # c shares a device with a: the clusters merge, and so do their organizations.
        await one.directory.resolve(who("a", "o1"), [seen(DEVICE, "laptop")])
        c = await two.directory.resolve(who("c", "o3"), [seen(DEVICE, "laptop")])
        assert c.cluster_organizations == 3
        assert (await two.directory.cluster_of("d")).organizations == 3
        # Replica one cached b's cluster before the merge; past the cache TTL it sees it.
        one.ticks.now += 2
        assert (await one.directory.resolve(who("b", "o2"), [])).cluster_organizations == 3


async def test_a_ring_of_organizations_is_limited_and_one_organization_is_not(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    clock = Clock()
    async with (
        replica(redis_url, policies(LINKED, RINGS), clock) as one,
        replica(redis_url, policies(LINKED, RINGS), clock) as two,
    ):
        refused = []
        for n in range(8):  # each ring account signs up as its own organization
            r = (one, two)[n % 2]
            subject = await r.directory.resolve(
                who(f"ring-{n}", f"ring-org-{n}"), [seen(CARD, "x")]
            )
            decision = await r.engine.reserve(f"ring-{n}", subject, estimate(1))
            if not decision.admitted:
                assert decision.refusal is not None and decision.refusal.policy == "rings"
                refused.append(n)
        # Two accounts (two organizations) run free; from the third on, three requests a day.
        assert refused == [5, 6, 7]
        for n in range(8):  # one organization, eight accounts on its card
            r = (one, two)[n % 2]
            subject = await r.directory.resolve(who(f"acme-{n}", "acme"), [seen(CARD, "acme")])
            assert subject.cluster_organizations == 1 and (n == 0) == (subject.cluster is None)
            assert (await r.engine.reserve(f"acme-{n}", subject, estimate(1))).admitted


async def test_a_cluster_budget_grows_with_the_square_root_of_its_accounts(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    """4 requests a day per allowance, scaled by the square root of the linked accounts:
    a card shared by 4 accounts gets 4 x 2 = 8, not 4 x 4 = 16; an account alone gets 4."""
    shared = replace(
        policy("per-card", limit(Metric.REQUESTS, 4, Unit.DAY), scope=Scope.CLUSTER),
        scale_by="cluster_accounts",
        scale_exponent=0.5,
    )
    clock = Clock()
    async with replica(redis_url, policies(shared), clock) as one:
        for n in range(4):  # four accounts join the card's cluster first
            await one.directory.resolve(who(f"ring-{n}", "o1"), [seen(CARD, "shared")])
        admitted = 0
        for n in range(40):
            account = f"ring-{n % 4}"
            subject = await one.directory.resolve(who(account, "o1"), [seen(CARD, "shared")])
            admitted += (await one.engine.reserve(f"r{n}", subject, estimate(1))).admitted
        alone = 0
        for n in range(10):
            subject = await one.directory.resolve(who("solo", "o2"), [seen(CARD, "own")])
            alone += (await one.engine.reserve(f"s{n}", subject, estimate(1))).admitted
    assert admitted == 8
    assert alone == 4
