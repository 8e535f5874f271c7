"""Engine semantics, on memory:// and on Redis alike (the ``store`` fixture runs both)."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.budget.store import CounterStore
from gateway.metering import Usage
from gateway.policy.model import Metric, Mode, PolicySet, Scope, Unit
from tests.budget.helpers import Clock, estimate, limit, policy, policy_set, subject


def engine(
    store: CounterStore, policies: PolicySet, clock: Clock, ttl: float = 600
) -> BudgetEngine:
    return BudgetEngine(store, PolicyHolder(policies), clock=clock, reservation_ttl=ttl)


async def test_reserves_all_metrics_and_reports_statuses(store: CounterStore) -> None:
    limits = (
        limit(Metric.REQUESTS, 10, Unit.MINUTE),
        limit(Metric.INPUT_TOKENS, 1000, Unit.HOUR),
        limit(Metric.OUTPUT_TOKENS, 1000, Unit.DAY),
        limit(Metric.TOKENS, 5000, Unit.MONTH),
        limit(Metric.CONCURRENT, 3),
    )
    eng = engine(store, policy_set(policy("p", *limits)), Clock())
    decision = await eng.reserve("r1", subject(), estimate(100, 200))
    assert decision.admitted and not decision.degraded
    assert [s.remaining for s in decision.statuses] == [9, 900, 800, 4700, 2]
    assert decision.statuses[0].reset_seconds == 6.0  # one request drains in 60/10 s
    assert decision.statuses[2].reset_seconds == 12 * 3600  # noon → midnight UTC


async def test_refusal_debits_nothing_and_names_the_binding_limit(store: CounterStore) -> None:
    clock = Clock()
    account = policy("acct", limit(Metric.TOKENS, 1000, Unit.MINUTE))
    org = policy("org", limit(Metric.TOKENS, 500, Unit.DAY), scope=Scope.ORGANIZATION)
    eng = engine(store, policy_set(account, org), clock)
    assert (await eng.reserve("r1", subject(), estimate(200, 200))).admitted
    refused = await eng.reserve("r2", subject(), estimate(250, 250))  # fits neither
    assert not refused.admitted and refused.refusal is not None
    assert refused.refusal.policy == "org"  # the day outlasts the minute
    assert refused.refusal.scope_id == "o1" and refused.refusal.requested == 500
    assert refused.refusal.retry_after == 12 * 3600
    assert [s.remaining for s in refused.statuses] == [600, 100]  # nothing debited


async def test_policy_without_scope_id_or_match_is_skipped(store: CounterStore) -> None:
    org = policy("org", limit(Metric.REQUESTS, 0, Unit.DAY), scope=Scope.ORGANIZATION)
    other = policy("other", limit(Metric.REQUESTS, 0, Unit.DAY), match=(("model", "x-*"),))
    eng = engine(store, policy_set(org, other), Clock())
    decision = await eng.reserve("r1", subject(organization=None), estimate())
    assert decision.admitted and decision.statuses == ()


async def test_settle_refunds_debits_extra_and_is_idempotent(store: CounterStore) -> None:
    clock = Clock()
    eng = engine(store, policy_set(policy("p", limit(Metric.TOKENS, 10_000, Unit.DAY))), clock)
    first = await eng.reserve("r1", subject(), estimate(0, 1000))
    assert first.statuses[0].remaining == 9000
    await eng.settle("r1", Usage(output_tokens=100))
    assert (await eng.usage(Scope.ACCOUNT, "a1"))[0].remaining == 9900
    await eng.settle("r1", Usage(output_tokens=5000))  # a second settle is a no-op
    assert (await eng.usage(Scope.ACCOUNT, "a1"))[0].remaining == 9900
    await eng.reserve("r2", subject(), estimate(0, 100))
    await eng.settle("r2", Usage(input_tokens=300, output_tokens=200, cache_read_input_tokens=50))
    assert (await eng.usage(Scope.ACCOUNT, "a1"))[0].remaining == 9400  # cache reads free


async def test_settle_none_refunds_tokens_but_keeps_the_request(store: CounterStore) -> None:
    limits = (limit(Metric.REQUESTS, 5, Unit.DAY), limit(Metric.TOKENS, 100, Unit.DAY))
    eng = engine(store, policy_set(policy("p", *limits)), Clock())
    await eng.reserve("r1", subject(), estimate(10, 40))
    await eng.settle("r1", None)
    assert [s.remaining for s in await eng.usage(Scope.ACCOUNT, "a1")] == [4, 100]


async def test_concurrency_slot_is_released_by_settle(store: CounterStore) -> None:
    eng = engine(store, policy_set(policy("p", limit(Metric.CONCURRENT, 1))), Clock())
    assert (await eng.reserve("r1", subject(), estimate())).admitted
    refused = await eng.reserve("r2", subject(), estimate())
    assert not refused.admitted and refused.refusal and refused.refusal.retry_after == 1.0
    await eng.settle("r1", Usage())
    assert (await eng.reserve("r3", subject(), estimate())).admitted


async def test_an_expired_reservation_frees_its_slot_keeps_its_tokens_and_settles_late(
    store: CounterStore,
) -> None:
    """Expired unextended (its replica died, or the store stalled): the concurrency slot
    comes back, the 800 reserved tokens stay charged (that output may have been served),
    and a settle arriving after all still charges the real usage."""
    clock = Clock()
    limits = (limit(Metric.CONCURRENT, 1), limit(Metric.TOKENS, 1000, Unit.DAY))
    eng = engine(store, policy_set(policy("p", *limits)), clock, ttl=600)
    assert (await eng.reserve("dead", subject(), estimate(400, 400))).admitted
    clock.advance(599)
    assert not (await eng.reserve("early", subject(), estimate())).admitted
    clock.advance(1)
    later = await eng.reserve("later", subject(), estimate(0, 10))
    assert later.admitted
    assert [s.remaining for s in later.statuses] == [0, 190]  # slot back; 800 still charged
    await eng.settle("dead", Usage(input_tokens=400, output_tokens=100))  # late: corrected
    assert (await eng.usage(Scope.ACCOUNT, "a1"))[1].remaining == 1000 - 10 - 500


async def test_rolling_bucket_drains(store: CounterStore) -> None:
    clock = Clock()
    eng = engine(store, policy_set(policy("p", limit(Metric.TOKENS, 600, Unit.MINUTE))), clock)
    assert (await eng.reserve("r1", subject(), estimate(600, 0))).admitted
    refused = await eng.reserve("r2", subject(), estimate(100, 0))
    assert refused.refusal is not None and refused.refusal.retry_after == 10.0
    clock.advance(30)
    assert (await eng.usage(Scope.ACCOUNT, "a1"))[0].remaining == 300
    clock.advance(30)
    assert (await eng.usage(Scope.ACCOUNT, "a1"))[0].remaining == 600


async def test_waiting_retry_after_then_retrying_is_admitted(store: CounterStore) -> None:
    clock = Clock()
    limits = (limit(Metric.REQUESTS, 7, Unit.SECOND), limit(Metric.TOKENS, 999, Unit.HOUR))
    eng = engine(store, policy_set(policy("p", *limits)), clock)
    admitted = refused = 0
    for i in range(300):
        decision = await eng.reserve(f"r{i}", subject(), estimate(13, 17))
        if decision.admitted:
            admitted += 1
            clock.advance(0.001)
            continue
        refused += 1
        assert decision.refusal is not None and decision.refusal.retry_after is not None
        clock.advance(decision.refusal.retry_after)
        assert (await eng.reserve(f"again{i}", subject(), estimate(13, 17))).admitted
    assert admitted and refused


async def test_never_fits_gives_none_and_zero_blocks(store: CounterStore) -> None:
    limits = (limit(Metric.TOKENS, 100, Unit.MINUTE), limit(Metric.REQUESTS, 0, Unit.DAY))
    eng = engine(store, policy_set(policy("big", limits[0]), policy("zero", limits[1])), Clock())
    too_big = await eng.reserve("r1", subject(), estimate(101, 0))
    assert too_big.refusal is not None and too_big.refusal.retry_after is None
    blocked = await eng.reserve("r2", subject(), estimate(1, 0))
    assert blocked.refusal is not None and blocked.refusal.policy == "zero"
    assert blocked.refusal.retry_after is None


async def test_calendar_windows_reset_at_midnight_and_on_the_first(store: CounterStore) -> None:
    clock = Clock(datetime(2026, 6, 30, 23, 59, 30, tzinfo=UTC).timestamp())
    limits = (limit(Metric.REQUESTS, 1, Unit.DAY), limit(Metric.TOKENS, 100, Unit.MONTH))
    eng = engine(store, policy_set(policy("d", limits[0]), policy("m", limits[1])), clock)
    assert (await eng.reserve("r1", subject(), estimate(60, 0))).admitted
    refused = await eng.reserve("r2", subject(), estimate(10, 0))
    assert refused.refusal is not None and refused.refusal.retry_after == 30.0
    clock.advance(30)  # 1 July 00:00:00: a new day and a new month
    decision = await eng.reserve("r3", subject(), estimate(90, 0))
    assert decision.admitted and [s.remaining for s in decision.statuses] == [0, 10]
    assert decision.statuses[1].reset_seconds == 31 * 86400
    await eng.settle("r1", Usage(input_tokens=1))  # adjusts June, not July
    assert (await eng.usage(Scope.ACCOUNT, "a1"))[1].remaining == 10


async def test_reload_changing_an_amount_keeps_the_spend(store: CounterStore) -> None:
    holder = PolicyHolder(policy_set(policy("p", limit(Metric.TOKENS, 1000, Unit.DAY))))
    eng = BudgetEngine(store, holder, clock=Clock())
    await eng.reserve("r1", subject(), estimate(300, 0))
    holder.swap(policy_set(policy("p", limit(Metric.TOKENS, 2000, Unit.DAY))))
    decision = await eng.reserve("r2", subject(), estimate(100, 0))
    assert decision.statuses[0].remaining == 1600
    assert decision.statuses[0].limit.amount == 2000


async def test_shadow_counts_never_refuses_and_enforcing_refuses_the_same(
    store: CounterStore,
) -> None:
    def policies(mode: Mode) -> PolicySet:
        return policy_set(policy("tight", limit(Metric.TOKENS, 250, Unit.DAY), mode=mode))

    results: dict[Mode, list[bool]] = {}
    for mode in (Mode.SHADOW, Mode.ENFORCE):
        prefix = mode.value
        eng = engine(store, policies(mode), Clock())
        seen = []
        for i, size in enumerate([100, 100, 100, 40, 10, 1]):
            decision = await eng.reserve(f"{prefix}{i}", subject(f"{prefix}-acct"), estimate(size))
            if mode is Mode.SHADOW:
                assert decision.admitted and decision.statuses == ()
                seen.append(not decision.shadow_refusals)
                for refusal in decision.shadow_refusals:
                    assert refusal.shadow and refusal.policy == "tight"
            else:
                seen.append(decision.admitted)
        results[mode] = seen
    assert results[Mode.SHADOW] == results[Mode.ENFORCE] == [True, True, False, True, True, False]
