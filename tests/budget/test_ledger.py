"""The ledger, pinned: how long each counter lives, and the boundaries of reserve, settle
and expiry that the random memory-versus-Redis test finds only by chance.

Counter lifetimes are read as Redis ``PTTL`` on the real keys (Redis TTLs run on real
time, so an injected clock cannot show them); the same lifetimes seen through the engine
run on memory and Redis alike, where the memory store drops counters by the injected clock.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio

from gateway.budget.buckets import plan
from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.budget.store import CounterStore
from gateway.metering import Usage
from gateway.policy.model import Metric, Mode, PolicySet, Scope, Unit
from gateway.storage.budget_redis import GRACE, RedisStore, member
from tests.budget.helpers import NOON, Clock, estimate, limit, policy, policy_set, subject

TTL = 600.0  # reservation TTL in these tests: distinct from GRACE, so each term shows
A1 = {Scope.ACCOUNT: "a1", Scope.ORGANIZATION: None, Scope.CLUSTER: None}


def engine(
    store: CounterStore, policies: PolicySet, clock: Clock, ttl: float = TTL, replica: str = "r"
) -> BudgetEngine:
    return BudgetEngine(
        store, PolicyHolder(policies), clock=clock, reservation_ttl=ttl, replica=replica
    )


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def period_end(window: Unit, moment: datetime) -> datetime:
    """The end of the UTC day or month holding ``moment``, by the calendar, not the Lua."""
    day = datetime.combine(moment.date(), datetime.min.time(), UTC)
    if window is Unit.DAY:
        return day + timedelta(days=1)
    first = day.replace(day=1)
    return (first + timedelta(days=32)).replace(day=1)


def suffix(window: Unit, moment: datetime) -> str:
    return moment.strftime(":%Y-%m-%d" if window is Unit.DAY else ":%Y-%m")


async def remaining(eng: BudgetEngine, account: str = "a1") -> list[int]:
    return [s.remaining for s in await eng.usage(Scope.ACCOUNT, account)]


@pytest.fixture
async def redis_store(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> AsyncIterator[RedisStore]:
    """A Redis store on the flushed database that ``redis_client`` inspects."""
    store = RedisStore(redis.asyncio.Redis.from_url(redis_url))
    try:
        yield store
    finally:
        await store.aclose()


async def pttl_close_to(client: redis.asyncio.Redis, key: str, seconds: float) -> int:
    """The key's PTTL, checked to be the lifetime ``seconds`` set a moment ago (the test's
    own real time may have eaten up to 2 s of it)."""
    expected = math.ceil(seconds * 1000)
    left = int(await client.pttl(key))
    assert expected - 2000 <= left <= expected, (key, left, expected)
    return left


# --- Counter lifetimes, per window (Redis PTTL on the real keys) -------------------------

LIFETIME_POLICY = policy_set(
    policy(
        "p",
        limit(Metric.TOKENS, 10_000, Unit.DAY),
        limit(Metric.INPUT_TOKENS, 100_000, Unit.MONTH),
        limit(Metric.OUTPUT_TOKENS, 3600, Unit.HOUR),  # drains 1 token a second
        limit(Metric.CONCURRENT, 5),
    )
)
MOMENTS = [
    at(2026, 6, 5, 0, 0, 1),  # just after midnight: a whole day ahead
    at(2026, 6, 5, 12),
    at(2026, 6, 5, 23, 59),
    at(2026, 6, 30, 23, 59, 30),  # the last minute of a month
    at(2026, 7, 1),  # the first instant of one
    at(2024, 2, 29, 12),  # a leap day
    at(2025, 12, 31, 23, 59),  # the last minute of a year
]


def counter_keys(
    store: RedisStore, when: datetime, policies: PolicySet = LIFETIME_POLICY
) -> dict[str, str]:
    """The counters one request of a1 debits: metric → real key, period included."""
    keys = {}
    for p in plan(policies, {"model": "m"}, A1, estimate()):
        key = store.counter_key(p.bucket)
        if p.limit.unit is not None and p.limit.unit.calendar:
            key += suffix(p.limit.unit, when)
        keys[p.limit.metric.value] = key
    return keys


@pytest.mark.parametrize("moment", MOMENTS, ids=lambda m: m.strftime("%Y-%m-%dT%H:%M:%S"))
async def test_each_counter_lives_as_long_as_its_window_needs(
    redis_store: RedisStore, redis_client: redis.asyncio.Redis, moment: datetime
) -> None:
    """Day and month counters live to the end of their UTC period, plus the reservation
    TTL and the grace a late settle needs; a rolling one until it has drained (+60 s);
    an in-flight counter, the record and the pending set as long as the reservation."""
    now = moment.timestamp()
    eng = engine(redis_store, LIFETIME_POLICY, Clock(now))
    assert (await eng.reserve("q", subject(), estimate(100, 200))).admitted
    keys = counter_keys(redis_store, moment)
    day_end = period_end(Unit.DAY, moment).timestamp()
    month_end = period_end(Unit.MONTH, moment).timestamp()
    day = await pttl_close_to(redis_client, keys["tokens"], day_end - now + TTL + GRACE)
    assert day > (day_end - now) * 1000  # a daily budget never resets before midnight
    await pttl_close_to(redis_client, keys["input_tokens"], month_end - now + TTL + GRACE)
    await pttl_close_to(redis_client, keys["output_tokens"], 200 + 60)  # 200 at 1/s
    await pttl_close_to(redis_client, keys["concurrent"], TTL + GRACE)
    record = f"{redis_store.base}r:{member(eng.replica, 'q')}"
    await pttl_close_to(redis_client, record, TTL + GRACE)
    await pttl_close_to(redis_client, redis_store.base + "pending", TTL + GRACE)


@pytest.mark.parametrize("moment", MOMENTS[:3], ids=["00:00:01", "12:00", "23:59"])
async def test_settle_keeps_calendar_counters_until_their_period_ends(
    redis_store: RedisStore, redis_client: redis.asyncio.Redis, moment: datetime
) -> None:
    """A settle (refund or extra debit) never shortens a calendar counter's life; a
    rolling counter's life follows its new level."""
    clock = Clock(moment.timestamp())
    eng = engine(redis_store, LIFETIME_POLICY, clock)
    await eng.reserve("refund", subject(), estimate(100, 200))
    await eng.reserve("extra", subject(), estimate(100, 200))
    clock.advance(10)
    await eng.settle("refund", Usage(input_tokens=10, output_tokens=20))
    await eng.settle("extra", Usage(input_tokens=500, output_tokens=400))
    keys = counter_keys(redis_store, moment)
    now = moment.timestamp()
    day_end = period_end(Unit.DAY, moment).timestamp()
    await pttl_close_to(redis_client, keys["tokens"], day_end - now + TTL + GRACE)
    month_end = period_end(Unit.MONTH, moment).timestamp()
    await pttl_close_to(redis_client, keys["input_tokens"], month_end - now + TTL + GRACE)
    # 400 reserved at 1/s, 10 s drained, then -180 (capped by the undrained) and +200.
    await pttl_close_to(redis_client, keys["output_tokens"], 400 - 10 - 180 + 200 + 60)
    assert await redis_client.get(keys["concurrent"]) == b"0"
    assert await redis_client.pttl(keys["concurrent"]) > 0


@pytest.mark.parametrize("moment", MOMENTS[:3], ids=["00:00:01", "12:00", "23:59"])
async def test_a_written_back_day_counter_lives_until_its_day_ends(
    redis_store: RedisStore, redis_client: redis.asyncio.Redis, moment: datetime
) -> None:
    """What replicas admitted alone during an outage is written back with the same life."""
    now = moment.timestamp()
    planned = plan(LIFETIME_POLICY, {"model": "m"}, A1, estimate(100, 200))
    await redis_store.debit([(p.bucket, p.bucket.cost) for p in planned], now=now, batch="b1")
    keys = counter_keys(redis_store, moment)
    day_end = period_end(Unit.DAY, moment).timestamp()
    await pttl_close_to(redis_client, keys["tokens"], day_end - now + GRACE)
    assert await redis_client.get(keys["tokens"]) == b"300"
    assert not await redis_client.exists(keys["concurrent"])  # in-flight: never written back


# --- The same lifetimes through the engine, on memory and Redis -------------------------


@pytest.mark.parametrize(
    "spent_at", [at(2026, 6, 5, 0, 0, 1), at(2026, 6, 5, 12), at(2026, 6, 5, 23, 59)]
)
async def test_a_day_budget_spent_is_spent_until_midnight_and_fresh_after(
    store: CounterStore, spent_at: datetime
) -> None:
    clock = Clock(spent_at.timestamp())
    eng = engine(store, policy_set(policy("d", limit(Metric.TOKENS, 1000, Unit.DAY))), clock)
    assert (await eng.reserve("spend", subject(), estimate(400, 500))).admitted
    assert (await eng.reserve("more", subject(), estimate(0, 100))).admitted
    await eng.settle("more", Usage(output_tokens=50))  # settles do not shorten the day
    await eng.settle("spend", Usage(input_tokens=400, output_tokens=550))
    clock.now = at(2026, 6, 5, 23, 59, 59).timestamp()
    refused = await eng.reserve("late", subject(), estimate(1))
    assert refused.refusal is not None and refused.refusal.retry_after == 1.0
    assert await remaining(eng) == [0]
    clock.now = at(2026, 6, 6).timestamp()
    assert await remaining(eng) == [1000]
    assert (await eng.reserve("next day", subject(), estimate(1000))).admitted


@pytest.mark.parametrize(
    ("first", "last", "next_first"),
    [
        (at(2026, 6, 1, 0, 0, 1), at(2026, 6, 30, 23, 59, 59), at(2026, 7, 1)),
        (at(2024, 2, 1, 0, 0, 1), at(2024, 2, 29, 23, 59, 59), at(2024, 3, 1)),
        (at(2025, 12, 1, 12), at(2025, 12, 31, 23, 59, 59), at(2026, 1, 1)),
    ],
    ids=["june", "leap-february", "december"],
)
async def test_a_month_budget_spent_on_the_first_is_spent_until_the_last_second(
    store: CounterStore, first: datetime, last: datetime, next_first: datetime
) -> None:
    clock = Clock(first.timestamp())
    policies = policy_set(policy("m", limit(Metric.TOKENS, 1000, Unit.MONTH)))
    eng = engine(store, policies, clock)
    assert (await eng.reserve("spend", subject(), estimate(1000))).admitted
    await eng.settle("spend", Usage(input_tokens=1000))
    clock.now = (first + timedelta(days=20)).timestamp()
    assert not (await eng.reserve("mid", subject(), estimate(1))).admitted
    clock.now = last.timestamp()
    refused = await eng.reserve("late", subject(), estimate(1))
    assert refused.refusal is not None and refused.refusal.retry_after == 1.0
    clock.now = next_first.timestamp()
    fresh = await eng.reserve("next month", subject(), estimate(1000))
    assert fresh.admitted and fresh.statuses[0].remaining == 0


async def test_a_rolling_budget_is_spent_until_it_has_drained(store: CounterStore) -> None:
    clock = Clock()
    eng = engine(store, policy_set(policy("h", limit(Metric.TOKENS, 3600, Unit.HOUR))), clock)
    assert (await eng.reserve("spend", subject(), estimate(3600))).admitted
    await eng.settle("spend", Usage(input_tokens=3600))
    clock.advance(1800)
    assert not (await eng.reserve("half", subject(), estimate(1801))).admitted
    assert await remaining(eng) == [1800]
    clock.advance(1799)
    assert not (await eng.reserve("almost", subject(), estimate(3600))).admitted
    assert await remaining(eng) == [3599]
    clock.advance(1)
    assert (await eng.reserve("drained", subject(), estimate(3600))).admitted


async def test_an_in_flight_counter_lives_while_its_reservation_is_held(
    store: CounterStore,
) -> None:
    """A stream longer than the reservation TTL keeps its slot while upkeep extends it."""
    clock = Clock()
    eng = engine(store, policy_set(policy("c", limit(Metric.CONCURRENT, 1))), clock, ttl=60)
    assert (await eng.reserve("long", subject(), estimate())).admitted
    for _ in range(120):  # ten minutes, ten TTLs
        clock.advance(5)
        await eng.upkeep()
    assert not (await eng.reserve("second", subject(), estimate())).admitted
    await eng.settle("long", Usage())
    assert (await eng.reserve("third", subject(), estimate())).admitted


async def test_an_in_flight_counter_outlives_ttl_plus_grace_while_held(
    store: CounterStore,
) -> None:
    """Held for 4000 s (TTL 60 s + grace 3600 s is 61 min), the slot is still taken."""
    clock = Clock()
    eng = engine(store, policy_set(policy("c", limit(Metric.CONCURRENT, 1))), clock, ttl=60)
    assert (await eng.reserve("long", subject(), estimate())).admitted
    for _ in range(800):
        clock.advance(5)
        await eng.upkeep()
    assert not (await eng.reserve("second", subject(), estimate())).admitted
    await eng.settle("long", Usage())
    assert (await eng.reserve("third", subject(), estimate())).admitted


async def test_extends_keep_a_held_reservations_redis_keys_alive(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    """Redis TTLs run on real time, so this one runs shrunk: TTL 0.3 s, grace 0.3 s,
    extended every 0.1 s for 1.2 s, as upkeep does. The in-flight counter, the record and
    the pending set all outlive TTL + grace, so the slot stays taken and the settle finds
    the reservation."""
    store = RedisStore(redis.asyncio.Redis.from_url(redis_url), grace=0.3)
    policies = policy_set(policy("c", limit(Metric.CONCURRENT, 1)))
    buckets = [p.bucket for p in plan(policies, {"model": "m"}, A1, estimate())]
    try:
        assert (await store.reserve("long", buckets, ttl=0.3, now=None)).admitted
        for _ in range(12):
            await asyncio.sleep(0.1)
            assert await store.extend(["long"], ttl=0.3, now=None) == 1
        second = await store.reserve("second", buckets, ttl=0.3, now=None)
        settled = await store.settle("long", {"concurrent": 0}, now=None)
        assert (second.admitted, settled) == (False, True)
    finally:
        await store.aclose()


# --- Settle: refunds, extra debits, counters that expired --------------------------------


async def test_a_rolling_refund_is_capped_by_what_has_not_drained(store: CounterStore) -> None:
    """r1 reserves 1000 of 3600/hour (1 a second); 400 s later 600 of it is still in the
    level, beside r2's 500. r1 settling at 0 takes back those 600, not 1000: more would
    erase r2's spend."""
    clock = Clock()
    eng = engine(store, policy_set(policy("h", limit(Metric.TOKENS, 3600, Unit.HOUR))), clock)
    await eng.reserve("r1", subject(), estimate(1000))
    clock.advance(400)
    await eng.reserve("r2", subject(), estimate(500))
    await eng.settle("r1", Usage())
    assert await remaining(eng) == [3600 - 500]
    clock.advance(2000)  # r2's 500 drained long ago: its refund now takes nothing
    await eng.reserve("r3", subject(), estimate(200))
    await eng.settle("r2", Usage())
    assert await remaining(eng) == [3600 - 200]


async def test_a_settle_above_the_reservation_debits_the_excess(store: CounterStore) -> None:
    """Never refused, even past the limit; the next request then waits."""
    clock = Clock()
    limits = (limit(Metric.TOKENS, 1000, Unit.DAY), limit(Metric.OUTPUT_TOKENS, 3600, Unit.HOUR))
    eng = engine(store, policy_set(policy("p", *limits)), clock)
    assert (await eng.reserve("r1", subject(), estimate(100, 100))).admitted
    await eng.settle("r1", Usage(input_tokens=300, output_tokens=900))
    assert await remaining(eng) == [0, 3600 - 900]
    refused = await eng.reserve("r2", subject(), estimate(1))
    assert refused.refusal is not None and refused.refusal.limit.metric is Metric.TOKENS
    assert refused.refusal.retry_after == 12 * 3600
    [_, hour] = await eng.usage(Scope.ACCOUNT, "a1")
    assert hour.reset_seconds == 900.0


async def test_a_refund_on_an_expired_calendar_counter_creates_no_counter(
    redis_store: RedisStore, redis_client: redis.asyncio.Redis
) -> None:
    """A counter gone before its settle (Redis expired it, or a merge moved it): the refund
    writes nothing, and a counter recreated smaller is clamped at 0, never negative."""
    clock = Clock()
    eng = engine(redis_store, policy_set(policy("d", limit(Metric.TOKENS, 1000, Unit.DAY))), clock)
    key = counter_keys(redis_store, datetime.fromtimestamp(NOON, UTC), eng.policies.current)
    key = key["tokens"]
    await eng.reserve("r1", subject(), estimate(500))
    await eng.reserve("r2", subject(), estimate(300))
    assert await redis_client.get(key) == b"800"
    await redis_client.delete(key)
    await eng.settle("r1", Usage(input_tokens=100))
    assert not await redis_client.exists(key)
    await eng.reserve("r3", subject(), estimate(50))
    await eng.settle("r2", Usage())  # a refund of 300 on a counter now holding 50
    assert await redis_client.get(key) == b"0"
    assert await remaining(eng) == [1000]


# --- Reserve: groups, shared counters, the exact limit, retry_after --------------------


async def test_shadow_groups_are_debited_only_when_the_enforced_group_admits(
    store: CounterStore,
) -> None:
    policies = policy_set(
        policy("enforced", limit(Metric.TOKENS, 100, Unit.DAY)),
        policy("roomy", limit(Metric.TOKENS, 1000, Unit.DAY), mode=Mode.SHADOW),
        policy("tight", limit(Metric.TOKENS, 60, Unit.DAY), mode=Mode.SHADOW),
    )
    eng = engine(store, policies, Clock())
    refused = await eng.reserve("big", subject(), estimate(150))
    assert not refused.admitted and refused.shadow_refusals == ()
    assert await remaining(eng) == [100, 1000, 60]  # nothing debited anywhere
    admitted = await eng.reserve("small", subject(), estimate(80))
    assert admitted.admitted
    assert [(r.policy, r.shadow) for r in admitted.shadow_refusals] == [("tight", True)]
    assert [s.policy for s in admitted.statuses] == ["enforced"]
    assert await remaining(eng) == [20, 920, 60]  # each shadow group on its own


async def test_two_limits_of_one_policy_on_one_metric_share_a_counter(
    store: CounterStore,
) -> None:
    limits = (
        limit(Metric.TOKENS, 1000, Unit.DAY),
        limit(Metric.TOKENS, 500, Unit.DAY),  # the stricter stands for both
        limit(Metric.TOKENS, 400, Unit.HOUR),  # another window: its own counter
    )
    eng = engine(store, policy_set(policy("p", *limits)), Clock())
    decision = await eng.reserve("r1", subject(), estimate(300))
    assert [(s.limit.amount, s.remaining) for s in decision.statuses] == [(500, 200), (400, 100)]
    refused = await eng.reserve("r2", subject(), estimate(201))
    assert refused.refusal is not None and refused.refusal.limit.amount == 500
    assert (await eng.reserve("r3", subject(), estimate(100))).admitted
    assert await remaining(eng) == [100, 0]


async def test_a_reservation_exactly_at_the_limit_fits_and_one_more_does_not(
    store: CounterStore,
) -> None:
    limits = (limit(Metric.TOKENS, 1000, Unit.DAY), limit(Metric.INPUT_TOKENS, 1000, Unit.MINUTE))
    eng = engine(store, policy_set(policy("p", *limits)), Clock())
    assert (await eng.reserve("r1", subject("a1"), estimate(999))).admitted
    assert not (await eng.reserve("r2", subject("a1"), estimate(2))).admitted
    last = await eng.reserve("r3", subject("a1"), estimate(1))
    assert last.admitted and [s.remaining for s in last.statuses] == [0, 0]
    assert (await eng.reserve("r4", subject("a2"), estimate(1000))).admitted
    too_big = await eng.reserve("r5", subject("a3"), estimate(1001))
    assert too_big.refusal is not None and too_big.refusal.retry_after is None


async def test_a_drained_rolling_bucket_fits_despite_float_error(store: CounterStore) -> None:
    """10 requests a second, all spent; 0.1 s later one has drained. In doubles the level
    is 9.00000095 (epoch seconds lose digits), so only the EPS lets that one request in."""
    clock = Clock()
    eng = engine(store, policy_set(policy("s", limit(Metric.REQUESTS, 10, Unit.SECOND))), clock)
    for i in range(10):
        assert (await eng.reserve(f"r{i}", subject(), estimate())).admitted
    assert not (await eng.reserve("over", subject(), estimate())).admitted
    clock.advance(0.1)
    assert await remaining(eng) == [1]
    decision = await eng.reserve("drained", subject(), estimate())
    assert decision.admitted and decision.statuses[0].remaining == 0
    assert not (await eng.reserve("one more", subject(), estimate())).admitted


async def test_rolling_retry_after_is_rounded_up_to_the_millisecond(store: CounterStore) -> None:
    """7 a second: one request drains in 1/7 s = 142.857 ms, so retry_after is 0.143;
    at 0.142 s it still does not fit, at 0.143 s it does."""
    clock = Clock()
    eng = engine(store, policy_set(policy("s", limit(Metric.REQUESTS, 7, Unit.SECOND))), clock)
    for i in range(7):
        await eng.reserve(f"r{i}", subject(), estimate())
    refused = await eng.reserve("over", subject(), estimate())
    assert refused.refusal is not None and refused.refusal.retry_after == 0.143
    clock.advance(0.142)
    early = await eng.reserve("early", subject(), estimate())
    assert early.refusal is not None and early.refusal.retry_after == 0.001
    clock.advance(0.001)
    assert (await eng.reserve("on time", subject(), estimate())).admitted


async def test_the_refusal_that_lasts_longest_binds_and_shadows_never_bind(
    store: CounterStore,
) -> None:
    policies = policy_set(
        policy("second", limit(Metric.TOKENS, 100, Unit.SECOND)),
        policy("minute", limit(Metric.TOKENS, 100, Unit.MINUTE)),
        policy("watch", limit(Metric.TOKENS, 10, Unit.DAY), mode=Mode.SHADOW),
    )
    eng = engine(store, policies, Clock())
    await eng.reserve("fill", subject(), estimate(100))
    refused = await eng.reserve("r2", subject(), estimate(50))
    assert refused.refusal is not None
    assert (refused.refusal.policy, refused.refusal.retry_after) == ("minute", 30.0)
    assert not refused.refusal.shadow


async def test_a_repeated_reserve_of_one_request_debits_once(store: CounterStore) -> None:
    eng = engine(store, policy_set(policy("d", limit(Metric.TOKENS, 1000, Unit.DAY))), Clock())
    assert (await eng.reserve("same", subject(), estimate(300))).admitted
    assert (await eng.reserve("same", subject(), estimate(300))).admitted
    assert await remaining(eng) == [700]


# --- Concurrency slots and expiry ------------------------------------------------------


async def test_settle_releases_the_slot_and_keeps_the_request(store: CounterStore) -> None:
    limits = (
        limit(Metric.CONCURRENT, 1),
        limit(Metric.REQUESTS, 2, Unit.DAY),
        limit(Metric.TOKENS, 100, Unit.DAY),
    )
    eng = engine(store, policy_set(policy("p", *limits)), Clock())
    assert (await eng.reserve("r1", subject(), estimate(10, 10))).admitted
    refused = await eng.reserve("r2", subject(), estimate())
    assert refused.refusal is not None and refused.refusal.retry_after == 1.0
    await eng.settle("r2", Usage())  # a refused request holds nothing to release
    assert not (await eng.reserve("r3", subject(), estimate())).admitted
    await eng.settle("r1", Usage(input_tokens=10, output_tokens=5))
    assert await remaining(eng) == [1, 1, 85]
    assert (await eng.reserve("r4", subject(), estimate(10, 40))).admitted
    await eng.settle("r4", None)  # nothing generated: slot and tokens back, request kept
    assert await remaining(eng) == [1, 0, 85]
    day = await eng.reserve("r5", subject(), estimate())
    assert day.refusal is not None and day.refusal.limit.metric is Metric.REQUESTS


EXPIRY_LIMITS = (
    limit(Metric.CONCURRENT, 1),
    limit(Metric.TOKENS, 1000, Unit.DAY),
    limit(Metric.OUTPUT_TOKENS, 3600, Unit.HOUR),
)


async def test_an_expired_reservation_frees_its_slot_exactly_at_its_ttl_on_reserve(
    store: CounterStore,
) -> None:
    clock = Clock()
    eng = engine(store, policy_set(policy("p", *EXPIRY_LIMITS)), clock, ttl=60)
    assert (await eng.reserve("dead", subject(), estimate(300, 500))).admitted
    clock.advance(59.5)
    assert not (await eng.reserve("early", subject(), estimate())).admitted
    clock.advance(0.5)
    later = await eng.reserve("later", subject(), estimate())
    assert later.admitted
    assert [s.remaining for s in later.statuses] == [0, 200, 3600 - 440]  # tokens kept


async def test_an_expired_reservation_is_released_by_upkeep_and_settled_late(
    store: CounterStore,
) -> None:
    """Expired by ``store.upkeep`` (no reserve needed): slot back, tokens kept; a late
    settle then corrects the tokens down, or up, to what was really used."""
    clock = Clock()
    eng = engine(store, policy_set(policy("p", *EXPIRY_LIMITS)), clock, ttl=60)
    await eng.reserve("down", subject(), estimate(300, 500))
    await eng.reserve("up", subject("a2"), estimate(100, 100))
    clock.advance(60)
    found = await store.upkeep("another", dead_after=15, now=clock())
    assert found.swept == 2
    assert await remaining(eng) == [1, 200, 3600 - 440]  # 60 s drained of the hour's 500
    await eng.settle("down", Usage(input_tokens=300, output_tokens=50))
    assert await remaining(eng) == [1, 650, 3600]  # 440 undrained, all refunded
    await eng.settle("up", Usage(input_tokens=100, output_tokens=400))
    assert await remaining(eng, "a2") == [1, 500, 3600 - 40 - 300]


async def test_a_late_settle_does_not_free_a_slot_someone_else_holds(
    store: CounterStore,
) -> None:
    clock = Clock()
    eng = engine(store, policy_set(policy("p", *EXPIRY_LIMITS)), clock, ttl=60)
    await eng.reserve("dead", subject(), estimate(10))
    clock.advance(60)
    assert (await eng.reserve("holder", subject(), estimate(10))).admitted
    await eng.settle("dead", Usage(input_tokens=10))
    assert not (await eng.reserve("third", subject(), estimate(10))).admitted


async def test_a_dead_replicas_reservations_are_expired_by_another_replicas_upkeep(
    store: CounterStore,
) -> None:
    clock = Clock()
    policies = policy_set(policy("p", *EXPIRY_LIMITS))
    dead, alive = engine(store, policies, clock, replica="dead"), engine(store, policies, clock)
    await dead.upkeep()
    await alive.upkeep()
    assert (await dead.reserve("held", subject(), estimate(100, 100))).admitted
    clock.advance(14)
    await alive.upkeep()
    assert not (await alive.reserve("early", subject(), estimate())).admitted
    clock.advance(1)  # 15 s without a heartbeat: dead, long before its TTL
    await alive.upkeep()
    assert (await alive.reserve("after", subject(), estimate())).admitted
    assert await remaining(alive) == [0, 800, 3600 - 85]
    await dead.settle("held", Usage(input_tokens=100, output_tokens=1))
    assert await remaining(alive) == [0, 899, 3600]


async def test_one_reserve_expires_at_most_sixteen_reservations(store: CounterStore) -> None:
    clock = Clock()
    eng = engine(store, policy_set(policy("c", limit(Metric.CONCURRENT, 20))), clock, ttl=60)
    for i in range(20):
        assert (await eng.reserve(f"r{i}", subject(), estimate())).admitted
    clock.advance(60)
    first = await eng.reserve("first", subject(), estimate())
    assert first.statuses[0].remaining == 20 - 4 - 1  # sixteen swept, four still held
    second = await eng.reserve("second", subject(), estimate())
    assert second.statuses[0].remaining == 20 - 2
