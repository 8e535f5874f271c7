"""The ledger through faults, on memory and on a real Redis alike: a repeated or lost
reserve, a stream longer than the reservation's TTL, a replica that died, a store that
went down and came back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace

import pytest

from gateway.budget.buckets import plan
from gateway.budget.engine import DEAD_AFTER, BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.budget.outage import Outage
from gateway.budget.store import Bucket, CounterStore, Reservation, Upkeep
from gateway.errors import StorageBusy, StorageError, StorageUnavailable
from gateway.metering import Usage
from gateway.policy.model import Metric, OnStorageError, PolicySet, Scope, Unit
from gateway.storage.connection import open_store
from tests.budget.helpers import Clock, estimate, limit, policy, policy_set, subject

SLOT_AND_DAY = policy_set(
    policy("p", limit(Metric.CONCURRENT, 1), limit(Metric.TOKENS, 1000, Unit.DAY))
)


def engine(store: CounterStore, policies: PolicySet, clock: Clock, **kw: object) -> BudgetEngine:
    outage = Outage(probe_interval=0)  # probe at once: no sleeping here
    return BudgetEngine(
        store,
        PolicyHolder(policies),
        clock=clock,
        reservation_ttl=60,
        outage=outage,
        **kw,  # type: ignore[arg-type]
    )


async def remaining(eng: BudgetEngine) -> list[int]:
    return [s.remaining for s in await eng.usage(Scope.ACCOUNT, "a1")]


async def test_a_repeated_reserve_debits_once(store: CounterStore) -> None:
    eng = engine(store, SLOT_AND_DAY, Clock())
    buckets = _buckets(eng, 100)
    first = await store.reserve("r1", buckets, ttl=60, now=Clock().now, owner="x")
    again = await store.reserve("r1", buckets, ttl=60, now=Clock().now, owner="x")
    assert first.admitted and again.admitted and again.repeated
    assert await remaining(eng) == [0, 900]


class LostAnswers:
    """The real store, except that the answer to the next ``lose`` reserves is lost after
    the store ran them: by default the connection broke once the command was sent (the
    store is taken for down); ``kind="timeout"`` is a call slower than the socket timeout.
    With ``all_but_forced`` every reserve's is, but write-backs get theirs (a nine-counter
    reserve slower than the socket timeout, the rest faster)."""

    def __init__(
        self, inner: CounterStore, lose: int, *, all_but_forced: bool = False, kind: str = "down"
    ) -> None:
        self.inner, self.lose, self.all_but_forced = inner, lose, all_but_forced
        self.kind = kind

    async def reserve(
        self,
        request_id: str,
        buckets: Sequence[Bucket],
        *,
        ttl: float,
        now: float | None,
        owner: str = "",
        force: bool = False,
    ) -> Reservation:
        found = await self.inner.reserve(
            request_id, buckets, ttl=ttl, now=now, owner=owner, force=force
        )
        if self.all_but_forced and not force:
            raise StorageError("no answer", kind=self.kind, maybe_applied=True)
        if self.lose > 0:
            self.lose -= 1
            raise StorageError("no answer", kind=self.kind, maybe_applied=True)
        return found

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_reserve_whose_answer_was_lost_is_released_and_a_late_one_does_nothing(
    store: CounterStore,
) -> None:
    """Refused without the store (its policy is closed): what the lost reserve debited is
    given back once the store answers, and a late copy of it debits nothing."""
    clock = Clock()
    closed = policy_set(replace(SLOT_AND_DAY.policies[0], on_storage_error=OnStorageError.CLOSED))
    eng = engine(LostAnswers(store, lose=1), closed, clock)  # type: ignore[arg-type]
    with pytest.raises(StorageUnavailable):
        await eng.reserve("lost", subject(), estimate(100, 100))
    assert await remaining(eng) == [0, 800]  # but the store ran it: slot and tokens held
    await eng.upkeep()  # the store answers again: the lost reserve is released
    assert await remaining(eng) == [1, 1000]
    assert eng.pending_work == 0
    # The same reserve, arriving late (it was queued behind a stall), debits nothing.
    with pytest.raises(StorageError):
        await store.reserve("lost", _buckets(eng, 200), ttl=60, now=clock.now, owner=eng.replica)
    assert await remaining(eng) == [1, 1000]


async def test_a_lost_reserve_admitted_alone_is_held_once_not_twice(store: CounterStore) -> None:
    """Admitted without the store (open policy) while the lost reserve had in fact run:
    once the store answers, the running exchange holds one slot and one reservation."""
    clock = Clock()
    eng = engine(LostAnswers(store, lose=1), SLOT_AND_DAY, clock)  # type: ignore[arg-type]
    assert (await eng.reserve("lost", subject(), estimate(100, 100))).degraded
    await eng.upkeep()
    assert await remaining(eng) == [0, 800]  # held once: it is still running
    assert eng.pending_work == 0
    await eng.settle("lost", Usage(input_tokens=100, output_tokens=50))
    assert await remaining(eng) == [1, 850]


async def test_a_lost_reserve_written_back_by_a_request_stays_held(store: CounterStore) -> None:
    """As above, but the next request writes the lost one back before any upkeep: the
    upkeep must not then release it as a lost reserve, giving back the slot and tokens of
    an exchange that runs (the next caller would be admitted past the limit)."""
    clock = Clock()
    eng = engine(LostAnswers(store, lose=1), SLOT_AND_DAY, clock)  # type: ignore[arg-type]
    assert (await eng.reserve("lost", subject(), estimate(100, 100))).degraded
    assert not (await eng.reserve("next", subject(), estimate(100, 100))).admitted
    await eng.upkeep()
    assert await remaining(eng) == [0, 800]  # still held once: it is still running
    assert not (await eng.reserve("after", subject(), estimate(100, 100))).admitted
    assert eng.pending_work == 0
    await eng.settle("lost", Usage(input_tokens=100, output_tokens=50))
    assert await remaining(eng) == [1, 850]


async def test_a_stream_longer_than_the_ttl_keeps_its_slot_and_is_charged_in_full(
    store: CounterStore,
) -> None:
    clock = Clock()
    eng = engine(store, SLOT_AND_DAY, clock)
    assert (await eng.reserve("long", subject(), estimate(100, 400))).admitted
    for _ in range(10):  # 10 minutes of streaming; the TTL is one minute
        clock.advance(30)
        await eng.upkeep()
        assert not (await eng.reserve(f"other{clock.now}", subject(), estimate())).admitted
    await eng.settle("long", Usage(input_tokens=100, output_tokens=350))
    assert await remaining(eng) == [1, 1000 - 450]


async def test_a_dead_replicas_slots_come_back_and_its_tokens_stay_charged(
    store: CounterStore,
) -> None:
    clock = Clock()
    dying = engine(store, SLOT_AND_DAY, clock)
    alive = engine(store, SLOT_AND_DAY, clock)
    await dying.upkeep()
    await alive.upkeep()
    assert (await dying.reserve("stream", subject(), estimate(100, 400))).admitted
    # The dying replica is SIGKILLed: no more upkeep, no settle. Its TTL is a minute, but
    # the other replica expires what it held as soon as its heartbeat is DEAD_AFTER old.
    for _ in range(4):
        clock.advance(DEAD_AFTER / 3 + 0.1)
        await alive.upkeep()
    assert clock.now - Clock().now < 30  # within 30 s of the death
    assert await remaining(alive) == [1, 500]  # slot back; 500 reserved tokens kept
    assert alive.replicas == 1


async def test_an_outage_admits_the_limit_once_across_replicas_then_writes_back(
    redis_url: str,
) -> None:
    """Two replicas that saw each other heartbeat split what was left when the store went
    away; when it answers again, what they admitted is written to it. (Redis only:
    memory:// has no outage, it is the fallback itself.)"""
    store = open_store(redis_url, prefix=f"faults-{uuid.uuid4().hex[:8]}")
    clock = Clock()
    ten = policy_set(policy("p", limit(Metric.REQUESTS, 10, Unit.DAY)))
    down = Switch(store)
    replicas = [engine(down, ten, clock), engine(down, ten, clock)]  # type: ignore[arg-type]
    for replica in replicas:
        await replica.upkeep()
    for replica in replicas:
        await replica.upkeep()  # each now knows of two
    assert (await replicas[0].reserve("before", subject(), estimate())).admitted
    down.on = False
    admitted = 0
    for n in range(20):
        decision = await replicas[n % 2].reserve(f"r{n}", subject(), estimate())
        assert decision.degraded
        admitted += decision.admitted
    assert admitted <= 9  # 9 were left; each replica admits 9 // 2
    for n in range(20):
        await replicas[n % 2].settle(f"r{n}", Usage())
    down.on = True
    for replica in replicas:
        await replica.upkeep()
    assert await remaining(replicas[0]) == [10 - 1 - admitted]
    await store.aclose()


def _buckets(eng: BudgetEngine, tokens: int) -> list[Bucket]:
    scope_ids = {scope: subject().scope_id(scope) for scope in Scope}
    planned = plan(eng.policies.current, subject().attributes, scope_ids, estimate(tokens, 0))
    return [p.bucket for p in planned]


class Switch:
    """The real store while ``on``; refused connections while off."""

    def __init__(self, inner: CounterStore) -> None:
        self.inner, self.on = inner, True

    def _check(self) -> None:
        if not self.on:
            raise StorageError("Connection refused", kind="down")

    async def reserve(self, *args: object, **kw: object) -> Reservation:
        self._check()
        return await self.inner.reserve(*args, **kw)  # type: ignore[arg-type]

    async def settle(self, *args: object, **kw: object) -> bool:
        self._check()
        return await self.inner.settle(*args, **kw)  # type: ignore[arg-type]

    async def upkeep(self, *args: object, **kw: object) -> Upkeep:
        self._check()
        return await self.inner.upkeep(*args, **kw)  # type: ignore[arg-type]

    async def extend(self, *args: object, **kw: object) -> int:
        self._check()
        return await self.inner.extend(*args, **kw)  # type: ignore[arg-type]

    async def release(self, *args: object, **kw: object) -> bool:
        self._check()
        return await self.inner.release(*args, **kw)  # type: ignore[arg-type]

    async def debit(self, debits: Sequence[tuple[Bucket, int]], **kw: object) -> None:
        self._check()
        await self.inner.debit(debits, **kw)  # type: ignore[arg-type]

    async def peek(self, *args: object, **kw: object) -> object:
        return await self.inner.peek(*args, **kw)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class Flaky:
    """The real store; ``lose_debits`` write-backs run but their answer is lost, and while
    ``busy`` every settle is shed."""

    def __init__(self, inner: CounterStore) -> None:
        self.inner, self.lose_debits, self.busy = inner, 0, False

    async def debit(self, debits: Sequence[tuple[Bucket, int]], **kw: object) -> None:
        await self.inner.debit(debits, **kw)  # type: ignore[arg-type]
        if self.lose_debits > 0:
            self.lose_debits -= 1
            raise StorageError("no answer in time", kind="timeout", maybe_applied=True)

    async def settle(self, *args: object, **kw: object) -> bool:
        if self.busy:
            raise StorageBusy("busy", retry_after=1.0)
        return await self.inner.settle(*args, **kw)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_write_back_whose_answer_was_lost_is_counted_once(redis_url: str) -> None:
    store = open_store(redis_url, prefix=f"faults-{uuid.uuid4().hex[:8]}")
    clock = Clock()
    flaky = Flaky(store)
    down = Switch(flaky)  # type: ignore[arg-type]
    ten = policy_set(policy("p", limit(Metric.REQUESTS, 10, Unit.DAY)))
    eng = engine(down, ten, clock)  # type: ignore[arg-type]
    await eng.upkeep()
    down.on = False
    for n in range(3):
        assert (await eng.reserve(f"r{n}", subject(), estimate())).degraded
        await eng.settle(f"r{n}", Usage())
    down.on, flaky.lose_debits = True, 1
    await eng.upkeep()  # written, but the answer is lost
    await eng.upkeep()  # sent again under the same batch id
    assert eng.pending_work == 0
    assert await remaining(eng) == [7]  # 3, not 6
    await store.aclose()


@pytest.mark.parametrize("all_lost", [False, True], ids=["every-other", "all-but-write-backs"])
async def test_isolated_timeouts_do_not_each_get_a_fresh_allowance(
    store: CounterStore, all_lost: bool
) -> None:
    """Every other reserve times out (never three in a row: the breaker stays shut) and is
    shed, never decided alone while the store answers the others (two deciders for one
    limit: 151 admitted of 100 under a starved CPU); or every reserve does, while each
    write-back gets through: two are shed, then the breaker opens and the fallback decides
    (each write-back starting a fresh fallback count gave a fresh share: 30 admitted of
    10). Together with the store's, admissions stay within the limit, and each counts once
    in the store afterwards."""
    clock = Clock()
    ten = policy_set(policy("p", limit(Metric.REQUESTS, 10, Unit.DAY)))
    lossy = LostAnswers(store, lose=0, all_but_forced=all_lost, kind="timeout")
    eng = engine(lossy, ten, clock)  # type: ignore[arg-type]
    admitted = shed = 0
    for n in range(30):
        lossy.lose = n % 2  # the answer to every other reserve is lost
        try:
            decision = await eng.reserve(f"r{n}", subject(), estimate())
        except StorageBusy:
            shed += 1
            continue
        assert all_lost or not decision.degraded
        admitted += decision.admitted
        if decision.admitted:
            await eng.settle(f"r{n}", Usage())
    await eng.upkeep()
    assert shed == (2 if all_lost else 15)
    assert admitted <= 10
    assert await remaining(eng) == [10 - admitted]


async def test_a_shed_settle_is_retried_and_never_opens_the_breaker(store: CounterStore) -> None:
    clock = Clock()
    flaky = Flaky(store)
    eng = engine(flaky, SLOT_AND_DAY, clock)  # type: ignore[arg-type]
    assert (await eng.reserve("r1", subject(), estimate(100, 100))).admitted
    flaky.busy = True
    await eng.settle("r1", Usage(input_tokens=100, output_tokens=20))
    assert not eng.outage.down
    flaky.busy = False
    await eng.upkeep()
    assert await remaining(eng) == [1, 880]


async def test_after_a_store_stall_nobody_is_taken_for_dead(store: CounterStore) -> None:
    """The store stalled 20 s: no replica could heartbeat. The first to get through must
    not expire the others' running exchanges."""
    clock = Clock()
    a, b = engine(store, SLOT_AND_DAY, clock), engine(store, SLOT_AND_DAY, clock)
    await a.upkeep()
    await b.upkeep()
    assert (await a.reserve("stream", subject(), estimate(100, 400))).admitted
    clock.advance(20)  # stalled: nothing reached the store
    await b.upkeep()
    await a.upkeep()
    assert await remaining(a) == [0, 500]


async def test_a_frozen_replica_takes_its_slot_back_when_it_wakes(store: CounterStore) -> None:
    """Frozen (SIGSTOP) past the dead time, its stream's slot was given back by the other
    replica; woken, it still runs the stream, so its next extension takes the slot back."""
    clock = Clock()
    frozen, other = engine(store, SLOT_AND_DAY, clock), engine(store, SLOT_AND_DAY, clock)
    await frozen.upkeep()
    await other.upkeep()
    assert (await frozen.reserve("stream", subject(), estimate(100, 400))).admitted
    for _ in range(4):
        clock.advance(DEAD_AFTER / 3 + 0.1)
        await other.upkeep()
    assert await remaining(other) == [1, 500]  # taken for dead: slot back, tokens kept
    await frozen.upkeep()  # it wakes
    assert await remaining(other) == [0, 500]
    await frozen.settle("stream", Usage(input_tokens=100, output_tokens=300))
    assert await remaining(other) == [1, 600]


async def test_requests_arriving_together_after_an_outage_write_back_once(redis_url: str) -> None:
    """Five exchanges admitted alone are still running when the store answers again and
    ten requests arrive at once: the write-back runs once, before any of them counts."""
    store = open_store(redis_url, prefix=f"faults-{uuid.uuid4().hex[:8]}")
    clock = Clock()
    down = Switch(store)
    twelve = policy_set(policy("p", limit(Metric.REQUESTS, 12, Unit.DAY)))
    eng = engine(down, twelve, clock)  # type: ignore[arg-type]
    await eng.upkeep()
    down.on = False
    for n in range(5):
        assert (await eng.reserve(f"alone{n}", subject(), estimate())).degraded
    down.on = True
    decisions = await asyncio.gather(
        *(eng.reserve(f"after{n}", subject(), estimate()) for n in range(10))
    )
    assert sum(d.admitted for d in decisions) == 12 - 5
    assert all(not d.degraded for d in decisions)
    assert eng.pending_work == 0
    assert await remaining(eng) == [0]
    await store.aclose()
