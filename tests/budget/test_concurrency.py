"""Exactly-N admission under concurrency, across two engines sharing one Redis.

The policies are ``on_storage_error: closed``: what is proved is the store's atomic
debit, never the fallback's guess (tests/budget/test_faults.py covers that). On a starved
CPU a call can miss its 0.5 s socket timeout; such a request is shed (503) and retried,
as a client does, after the upkeep has given back what a shed reserve may have debited,
so the count stays exact whatever the machine is doing."""

from __future__ import annotations

import asyncio

import redis.asyncio

from gateway.budget.decision import Decision
from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.errors import StorageUnavailable
from gateway.policy.model import Metric, OnStorageError, PolicySet, Scope, Unit
from gateway.storage.connection import open_store
from tests.budget.helpers import estimate, limit, policy, policy_set, subject

CLOSED = OnStorageError.CLOSED


async def _race(redis_url: str, policies: PolicySet, accounts: int) -> list[bool]:
    # Two engines with their own clients and pools stand for two replicas.
    stores = [open_store(redis_url, max_connections=32) for _ in range(2)]
    engines = [BudgetEngine(s, PolicyHolder(policies)) for s in stores]

    async def ask(i: int) -> Decision:
        for attempt in range(50):  # a store that never answers fails the test, not hangs it
            try:  # a retry is a new request, as a client's is
                request = f"r{i}-{attempt}"
                return await engines[i % 2].reserve(
                    request, subject(f"a{i % accounts}"), estimate(5, 5)
                )
            except StorageUnavailable:
                # What the upkeep (every second meanwhile) does before the retry: a shed
                # reserve that ran in the store late is given back, not held by nobody.
                await engines[i % 2].upkeep()
                await asyncio.sleep(0.2)
        raise AssertionError(f"request {i} shed 50 times: the store never answered it")

    try:
        decisions = await asyncio.gather(*(ask(i) for i in range(200)))
        return [d.admitted for d in decisions]
    finally:
        for s in stores:
            await s.aclose()


async def test_200_concurrent_against_room_for_100_grant_100(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    policies = policy_set(
        policy("p", limit(Metric.TOKENS, 1000, Unit.DAY), on_storage_error=CLOSED)
    )
    assert sum(await _race(redis_url, policies, accounts=1)) == 100


async def test_binding_organization_leaves_accounts_uncharged_for_refusals(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    account = policy("acct", limit(Metric.TOKENS, 1000, Unit.DAY), on_storage_error=CLOSED)
    org = policy(
        "org",
        limit(Metric.TOKENS, 1000, Unit.DAY),
        scope=Scope.ORGANIZATION,
        on_storage_error=CLOSED,
    )
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
