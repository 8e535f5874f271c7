"""memory:// and redis:// decide alike: random reserve/settle/clock sequences on both."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.metering import Usage
from gateway.policy.model import Metric, Mode, Scope, Unit
from gateway.storage.budget_memory import MemoryStore
from gateway.storage.budget_redis import RedisStore
from tests.budget.helpers import Clock, estimate, limit, policy, policy_set, subject

POLICIES = policy_set(
    policy(
        "acct",
        limit(Metric.REQUESTS, 3, Unit.SECOND),
        limit(Metric.TOKENS, 1000, Unit.MINUTE),
        limit(Metric.INPUT_TOKENS, 4000, Unit.DAY),
        limit(Metric.CONCURRENT, 2),
    ),
    policy(
        "org",
        limit(Metric.TOKENS, 3000, Unit.HOUR),
        limit(Metric.OUTPUT_TOKENS, 5000, Unit.MONTH),
        scope=Scope.ORGANIZATION,
    ),
    policy("watch", limit(Metric.TOKENS, 400, Unit.MINUTE), mode=Mode.SHADOW),
)
START = datetime(2026, 6, 30, 22, 0, tzinfo=UTC).timestamp()  # near a day and a month end
SEQUENCE_GRACE = 200 * 86_400.0  # longer than 40 jumps of 3 days

reserve = st.tuples(
    st.just("reserve"), st.sampled_from(["a1", "a2"]), st.integers(0, 400), st.integers(0, 400)
)
settle = st.tuples(
    st.just("settle"),
    st.integers(0, 40),  # which earlier request (may be refused, settled or unknown)
    st.one_of(st.none(), st.tuples(st.integers(0, 800), st.integers(0, 800))),
)
advance = st.tuples(
    st.just("advance"), st.sampled_from([0.001, 0.25, 1.0, 7.5, 59.0, 130.0, 3600.0, 86400.0 * 3])
)


@settings(max_examples=75, deadline=None)
@given(ops=st.lists(st.one_of(reserve, settle, advance), max_size=40))
async def test_memory_and_redis_decide_alike(redis_url: str, ops: list[tuple[Any, ...]]) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    clock = Clock(START)
    prefix = f"eq{uuid.uuid4().hex}"
    # Redis counts its key TTLs in real time, the memory store in the injected clock's: a
    # jump of days would lapse a record (TTL + grace) in one store and not in the other.
    # A grace longer than every sequence's jumps keeps the two clocks from meeting a TTL.
    redis_store = RedisStore(client, prefix=prefix, grace=SEQUENCE_GRACE)
    engines = [
        BudgetEngine(store, PolicyHolder(POLICIES), clock=clock, reservation_ttl=120)
        for store in (MemoryStore(grace=SEQUENCE_GRACE), redis_store)
    ]
    try:
        for n, op in enumerate(ops):
            if op[0] == "reserve":
                _, account, tokens_in, tokens_out = op
                call = [
                    e.reserve(f"r{n}", subject(str(account)), estimate(tokens_in, tokens_out))
                    for e in engines
                ]
                memory, remote = [await c for c in call]
                assert memory == remote
            elif op[0] == "settle":
                _, which, used = op
                usage = None if used is None else Usage(input_tokens=used[0], output_tokens=used[1])
                for e in engines:
                    await e.settle(f"r{which}", usage)
            else:
                clock.advance(float(op[1]))
        for scope, scope_id in (
            (Scope.ACCOUNT, "a1"),
            (Scope.ACCOUNT, "a2"),
            (Scope.ORGANIZATION, "o1"),
        ):
            assert await engines[0].usage(scope, scope_id) == await engines[1].usage(
                scope, scope_id
            )
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)  # they would outlive the test by SEQUENCE_GRACE
        await client.aclose()
