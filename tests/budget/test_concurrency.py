"""Exactly-N admission under concurrency, across two engines sharing one Redis."""

from __future__ import annotations

import asyncio

import redis.asyncio

from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.policy.model import Metric, PolicySet, Scope, Unit
from gateway.storage.connection import open_store
from tests.budget.helpers import estimate, limit, policy, policy_set, subject


async def _race(redis_url: str, policies: PolicySet, accounts: int) -> list[bool]:
    # Two engines with their own clients and pools stand for two replicas.
    stores = [open_store(redis_url, max_connections=32) for _ in range(2)]
    engines = [BudgetEngine(s, PolicyHolder(policies)) for s in stores]
    try:
        decisions = await asyncio.gather(
            *(
                engines[i % 2].reserve(f"r{i}", subject(f"a{i % accounts}"), estimate(5, 5))
                for i in range(200)
            )
        )
        return [d.admitted for d in decisions]
    finally:
        for s in stores:
            await s.aclose()


async def test_200_concurrent_against_room_for_100_grant_100(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    policies = policy_set(policy("p", limit(Metric.TOKENS, 1000, Unit.DAY)))
    assert sum(await _race(redis_url, policies, accounts=1)) == 100


async def test_binding_organization_leaves_accounts_uncharged_for_refusals(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    account = policy("acct", limit(Metric.TOKENS, 1000, Unit.DAY))
    org = policy("org", limit(Metric.TOKENS, 1000, Unit.DAY), scope=Scope.ORGANIZATION)
    policies = policy_set(account, org)
    assert sum(await _race(redis_url, policies, accounts=20)) == 100
    store = open_store(redis_url)
    try:
        engine = BudgetEngine(store, PolicyHolder(policies))
        spent = [
            1000 - (await engine.usage(Scope.ACCOUNT, f"a{i}"))[0].remaining for i in range(20)
        ]
        assert sum(spent) == 100 * 10  # only admitted requests were charged
        assert (await engine.usage(Scope.ORGANIZATION, "o1"))[0].remaining == 0
    finally:
        await store.aclose()
