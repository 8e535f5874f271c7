"""Live overrides on the engine: memory:// and Redis alike (counters and the overrides store)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.budget.store import CounterStore
from gateway.errors import StorageError
from gateway.overrides import LiveOverrides, parse_limits
from gateway.policy.model import Limit, Metric, PolicySet, Scope, Unit
from gateway.storage.budget_memory import MemoryStore
from gateway.storage.connection import open_store
from gateway.storage.live_memory import MemoryLiveStore
from gateway.storage.live_redis import LiveStore, open_live_store
from tests.budget.helpers import Clock, estimate, limit, policy, policy_set, subject

Stores = tuple[CounterStore, LiveStore]


@pytest.fixture(params=["memory", "redis"])
async def stores(
    request: pytest.FixtureRequest, redis_url: str, redis_client: redis.asyncio.Redis
) -> AsyncIterator[Stores]:
    if request.param == "memory":
        counters: CounterStore = MemoryStore()
        live: LiveStore = MemoryLiveStore()
    else:
        counters, live = open_store(redis_url), open_live_store(redis_url)
    try:
        yield counters, live
    finally:
        await counters.aclose()
        await live.aclose()


def engine(stores: Stores, policies: PolicySet, clock: Clock) -> tuple[BudgetEngine, LiveOverrides]:
    live = LiveOverrides(stores[1], clock=clock)
    eng = BudgetEngine(stores[0], PolicyHolder(policies), clock=clock, overrides=live.limits)
    return eng, live


def day(metric: Metric, amount: int) -> Limit:
    return limit(metric, amount, Unit.DAY)


async def test_replaces_the_metric_in_every_policy_of_the_scope(stores: Stores) -> None:
    first = policy("a", day(Metric.REQUESTS, 5), day(Metric.TOKENS, 1000))
    second = policy("b", day(Metric.REQUESTS, 7))
    org = policy("o", day(Metric.REQUESTS, 9), scope=Scope.ORGANIZATION)
    eng, live = engine(stores, policy_set(first, second, org), Clock())
    await live.set(Scope.ACCOUNT, "a1", parse_limits({"requests": "100/day"}), reason="test")
    decision = await eng.reserve("r1", subject(), estimate(10, 10))
    texts = {(s.policy, s.metric.value): s.limit.text for s in decision.statuses}
    assert texts == {
        ("a", "requests"): "100/day",
        ("a", "tokens"): "1000/day",  # other metrics untouched
        ("b", "requests"): "100/day",
        ("o", "requests"): "9/day",  # other scopes untouched
    }
    other = await eng.reserve("r2", subject("a2"), estimate())
    assert {s.limit.text for s in other.statuses if s.scope is Scope.ACCOUNT} == {
        "5/day",
        "1000/day",
        "7/day",
    }


async def test_raise_and_lower_keep_the_spend(stores: Stores) -> None:
    eng, live = engine(stores, policy_set(policy("a", day(Metric.REQUESTS, 3))), Clock())
    for i in range(3):
        assert (await eng.reserve(f"r{i}", subject(), estimate())).admitted
    assert not (await eng.reserve("r3", subject(), estimate())).admitted
    await live.set(Scope.ACCOUNT, "a1", parse_limits({"requests": "5/day"}))
    raised = await eng.reserve("r4", subject(), estimate())
    assert raised.admitted and raised.statuses[0].remaining == 1  # 3 spent before + this one
    await live.set(Scope.ACCOUNT, "a1", parse_limits({"requests": "2/day"}))
    lowered = await eng.reserve("r5", subject(), estimate())
    assert not lowered.admitted and lowered.statuses[0].remaining == 0
    assert (await live.clear(Scope.ACCOUNT, "a1")) is not None
    assert [s.remaining for s in await eng.usage(Scope.ACCOUNT, "a1")] == [0]  # 4 of 3 used


async def test_zero_blocks_and_usage_shows_the_override(stores: Stores) -> None:
    eng, live = engine(stores, policy_set(policy("a", day(Metric.TOKENS, 1000))), Clock())
    await live.set(Scope.ACCOUNT, "a1", parse_limits({"requests": "0/minute"}))
    refused = await eng.reserve("r1", subject(), estimate())
    assert not refused.admitted and refused.refusal is not None
    assert refused.refusal.retry_after is None and refused.refusal.limit.text == "0/minute"
    shown = {s.limit.text for s in await eng.usage(Scope.ACCOUNT, "a1")}
    assert shown == {"1000/day", "0/minute"}


async def test_an_expired_override_is_ignored_and_cleaned_up(stores: Stores) -> None:
    clock = Clock()
    eng, live = engine(stores, policy_set(policy("a", day(Metric.REQUESTS, 1))), clock)
    await live.set(Scope.ACCOUNT, "a1", parse_limits({"requests": "0/day"}), ttl_seconds=60)
    await live.set(Scope.ACCOUNT, "a2", parse_limits({"requests": "9/day"}))
    assert not (await eng.reserve("r1", subject(), estimate())).admitted
    clock.advance(60)
    assert (await eng.reserve("r2", subject(), estimate())).admitted
    assert [o.scope_id for o in live.active()] == ["a2"]
    await live.clear(Scope.ACCOUNT, "a2")  # any write removes what has expired
    version, documents = await stores[1].load_overrides()
    assert documents == [] and version == live.version


async def test_a_second_replica_follows_through_the_store(stores: Stores) -> None:
    clock = Clock()
    policies = policy_set(policy("a", day(Metric.REQUESTS, 1)))
    _, writer = engine(stores, policies, clock)
    reader_engine, reader = engine(stores, policies, clock)
    reader.interval = 0.05
    await reader.start()
    try:
        await writer.set(Scope.ACCOUNT, "a1", parse_limits({"requests": ["0/day"]}))
        for _ in range(100):
            if reader.limits(Scope.ACCOUNT, "a1") is not None:
                break
            await asyncio.sleep(0.01)
        decision = await reader_engine.reserve("r1", subject(), estimate())
        assert not decision.admitted
    finally:
        await reader.stop()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"tokens": "5 M/day"}, 'limits.tokens: "5 M/day" is not a limit; write AMOUNT/UNIT'),
        ({"tokenz": "5M/day"}, "'tokenz' is not a metric"),
        ({}, "limits must be an object"),
        ({"tokens": 5}, "limits.tokens: 5 has no unit"),
        ({"concurrent": [1, 2]}, "limits.concurrent takes one count"),
    ],
)
def test_parse_limits_names_the_problem(raw: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_limits(raw)
    assert str(caught.value).startswith(message)


def test_parse_limits_accepts_lists_and_counts() -> None:
    parsed = parse_limits({"tokens": ["200k/minute", "5M/day"], "concurrent": 4})
    assert [x.text for x in parsed] == ["200000/minute", "5000000/day", "4"]


class NoNotices:
    """The real live store, except that waiting for a notice fails: a cluster whose
    channel's node is down while the node holding the overrides answers."""

    def __init__(self, inner: LiveStore) -> None:
        self.inner, self.broken = inner, True

    async def wait_for_notice(self, seconds: float) -> bool:
        if self.broken:
            raise StorageError("The override channel broke: node down", kind="down")
        await asyncio.sleep(seconds)
        return False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_follower_whose_notices_fail_does_not_say_it_reads_again_each_retry(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    store = NoNotices(stores[1])
    live = LiveOverrides(store, interval=0.01)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="gateway.overrides"):
        follower = asyncio.create_task(live.run())
        await asyncio.sleep(0.3)  # about 30 retries
        said = [r.getMessage() for r in caplog.records]
        assert sum("could not be read" in m for m in said) == 1  # once a minute
        assert not any("readable again" in m for m in said)  # it is not, as a whole
        store.broken = False
        await asyncio.sleep(0.3)
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    said = [r.getMessage() for r in caplog.records]
    assert sum("readable again" in m for m in said) == 1  # now it is, and it says so once
