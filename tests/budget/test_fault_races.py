"""Over-admission after faults, found by attack: an upkeep racing requests of this
replica and of another, a capped retry of a lost reserve, the replica count read right
after a store restarted empty (each test failed before its fix), and the bound of one
replica deciding alone while another reaches the store (inherent, pinned).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace

import redis.asyncio

from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.budget.outage import Outage
from gateway.budget.store import CounterStore, Reservation
from gateway.metering import RequestEstimate, Usage
from gateway.policy.model import Action, Metric, Scope, Unit
from gateway.storage.connection import open_store
from tests.budget.helpers import Clock, estimate, limit, policy, policy_set, subject
from tests.budget.test_faults import SLOT_AND_DAY, LostAnswers, Switch, engine, remaining

FIVE = policy_set(policy("p", limit(Metric.REQUESTS, 5, Unit.DAY)))
TEN = policy_set(policy("p", limit(Metric.REQUESTS, 10, Unit.DAY)))


class Hooks:
    """The real store; ``after_release`` runs once a release has been applied, and
    ``before_force`` before a forced reserve (a write-back) is sent."""

    def __init__(self, inner: CounterStore) -> None:
        self.inner = inner
        self.after_release: Callable[[], Awaitable[None]] | None = None
        self.before_force: Callable[[], Awaitable[None]] | None = None

    async def release(self, *args: object, **kw: object) -> bool:
        done = await self.inner.release(*args, **kw)  # type: ignore[arg-type]
        if self.after_release is not None:
            hook, self.after_release = self.after_release, None
            await hook()
        return done

    async def reserve(self, *args: object, **kw: object) -> Reservation:
        if kw.get("force") and self.before_force is not None:
            hook, self.before_force = self.before_force, None
            await hook()
        return await self.inner.reserve(*args, **kw)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_an_upkeep_writes_back_before_it_releases(store: CounterStore) -> None:
    """Replica a's lost reserve ran in the store and was admitted alone; it is over. a's
    upkeep released the lost copy, then wrote back the admission: between the two the
    store missed it, and replica b's request then was admitted past the limit. Before: 6
    admitted of 5."""
    clock = Clock()
    hooks = Hooks(store)
    lossy = LostAnswers(hooks, lose=0)  # type: ignore[arg-type]
    a = engine(lossy, FIVE, clock, min_replicas=2)  # type: ignore[arg-type]
    b = engine(store, FIVE, clock, min_replicas=2)
    admitted = 0

    async def ask(eng: object, request_id: str) -> None:
        nonlocal admitted
        assert isinstance(eng, type(a))
        decision = await eng.reserve(request_id, subject(), estimate())
        admitted += decision.admitted
        if decision.admitted:
            await eng.settle(request_id, Usage())

    await ask(a, "r1")  # a knows 4 are left
    lossy.lose = 1
    await ask(a, "r2")  # ran in the store; admitted alone (its share: 4 // 2)
    for n in range(3, 7):
        await ask(b, f"r{n}")  # the store counts r2: b is admitted 3 and refused 1

    async def b_asks() -> None:
        await ask(b, "r7")

    hooks.after_release = b_asks
    await a.upkeep()
    assert admitted <= 5
    assert await remaining(b) == [5 - admitted]


async def test_a_request_writing_back_a_lost_reserve_racing_the_upkeep_holds_it_once(
    store: CounterStore,
) -> None:
    """The lost reserve runs, admitted alone; the next request writes it back while the
    upkeep runs at the same time: the upkeep must not release it meanwhile (before: the
    write-back met the tombstone and failed, and the running exchange held nothing)."""
    clock = Clock()
    hooks = Hooks(store)
    eng = engine(LostAnswers(hooks, lose=1), SLOT_AND_DAY, clock)  # type: ignore[arg-type]
    assert (await eng.reserve("lost", subject(), estimate(100, 100))).degraded
    ticks: list[asyncio.Task[None]] = []

    async def upkeep_meanwhile() -> None:
        tick = asyncio.create_task(eng.upkeep())
        ticks.append(tick)
        await asyncio.wait({tick}, timeout=0.5)  # the upkeep runs as far as it can

    hooks.before_force = upkeep_meanwhile
    assert not (await eng.reserve("next", subject(), estimate(100, 100))).admitted
    await asyncio.gather(*ticks)
    await eng.upkeep()
    assert await remaining(eng) == [0, 800]  # held once: it still runs
    assert not (await eng.reserve("after", subject(), estimate(100, 100))).admitted
    assert eng.pending_work == 0
    await eng.settle("lost", Usage(input_tokens=100, output_tokens=50))
    assert await remaining(eng) == [1, 850]


async def test_a_capped_retry_of_a_lost_reserve_stays_held(store: CounterStore) -> None:
    """The lost reserve ran (900 tokens); alone, the share (500) refused it but offered a
    cap; the retry with the cap found the store's reservation (repeated) and was admitted.
    The upkeep then released that reservation as lost: the running exchange was held
    nowhere (before: 1000 tokens left while 900 were reserved)."""
    capped = replace(
        policy("p", limit(Metric.TOKENS, 1000, Unit.DAY)), action=Action.CAP, min_output_tokens=256
    )
    eng = engine(
        LostAnswers(store, lose=1),  # type: ignore[arg-type]
        policy_set(capped),
        Clock(),
        min_replicas=2,
    )
    asking = RequestEstimate("m", 100, 800, stream=False, shapeable=True)
    decision = await eng.reserve("big", subject(), asking)
    assert decision.admitted and decision.capped_output == 400
    await eng.upkeep()
    assert [s.remaining for s in await eng.usage(Scope.ACCOUNT, "a1")] == [100]
    await eng.settle("big", Usage(input_tokens=100, output_tokens=400))
    assert [s.remaining for s in await eng.usage(Scope.ACCOUNT, "a1")] == [500]


async def test_the_replica_count_read_right_after_a_restart_is_not_trusted(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    """Two replicas heartbeat; Redis restarts empty; a's first upkeep finds only itself in
    the heartbeat set, and the store goes away again before b has heartbeat. a must still
    divide by two (before: it admitted the whole 10, b its 5)."""
    store = open_store(redis_url, prefix=f"faults-{uuid.uuid4().hex[:8]}")
    clock = Clock()
    down = Switch(store)
    a, b = engine(down, TEN, clock), engine(down, TEN, clock)  # type: ignore[arg-type]
    for _ in range(2):
        await a.upkeep()
        await b.upkeep()
    assert a.replicas == b.replicas == 2
    await redis_client.flushdb()  # restarted empty
    clock.advance(1)
    await a.upkeep()
    down.on = False
    admitted = 0
    for n in range(30):
        admitted += (await (a if n % 2 else b).reserve(f"r{n}", subject(), estimate())).admitted
    assert admitted <= 10
    await store.aclose()


async def test_one_replica_alone_while_the_other_reaches_the_store_adds_its_share(
    redis_url: str,
) -> None:
    """Inherent (docs/reliability.md): replica a cannot reach the store, b can. b admits
    the whole limit from the store, a its share alone: the limit plus a's share, 10 + 5,
    written back once a reaches the store again. Pins the bound, not a fix."""
    store = open_store(redis_url, prefix=f"faults-{uuid.uuid4().hex[:8]}")
    clock = Clock()
    cut = Switch(store)
    a = engine(cut, TEN, clock, min_replicas=2)  # type: ignore[arg-type]
    b = engine(store, TEN, clock, min_replicas=2)
    cut.on = False
    admitted = 0
    for n in range(30):
        eng = a if n % 2 else b
        decision = await eng.reserve(f"r{n}", subject(), estimate())
        admitted += decision.admitted
        if decision.admitted:
            await eng.settle(f"r{n}", Usage())
    assert admitted == 10 + 10 // 2
    cut.on = True
    await a.upkeep()
    assert a.pending_work == 0
    assert not (await b.reserve("then", subject(), estimate())).admitted
    await store.aclose()


async def test_running_exchanges_are_held_again_after_a_restart_empty(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    """Redis restarts empty while a stream runs: it forgot the stream's reservation, so
    its slot was free for another request (2 at once on ``concurrent: 1``) and its settle
    counted nothing. The next upkeep holds it again."""
    store = open_store(redis_url, prefix=f"faults-{uuid.uuid4().hex[:8]}")
    clock = Clock()
    a, b = engine(store, SLOT_AND_DAY, clock), engine(store, SLOT_AND_DAY, clock)
    assert (await a.reserve("stream", subject(), estimate(100, 400))).admitted
    await redis_client.flushdb()  # restarted empty
    clock.advance(5)
    await a.upkeep()
    assert not (await b.reserve("other", subject(), estimate(100, 100))).admitted
    await a.settle("stream", Usage(input_tokens=100, output_tokens=300))
    assert await remaining(b) == [1, 600]
    await store.aclose()


async def test_requests_during_an_upkeeps_write_back_ask_the_store(store: CounterStore) -> None:
    """The store answers this replica's upkeep while its breaker still has a second to
    run, and the write-back of what it admitted alone takes a while. Requests arriving
    meanwhile must wait for it and ask the store, not decide alone beside replicas that
    already use the store (chaos test_d: 6 admitted of 5, the second replica's fallback
    share on top of the first replica's admissions from the store)."""
    clock = Clock()
    hooks = Hooks(store)
    down = Switch(hooks)  # type: ignore[arg-type]
    outage = Outage(probe_interval=60)  # the breaker stays open a minute once it opens
    eng = BudgetEngine(down, PolicyHolder(FIVE), clock=clock, outage=outage)  # type: ignore[arg-type]
    await eng.upkeep()
    down.on = False
    assert (await eng.reserve("alone", subject(), estimate())).degraded
    down.on = True
    writing, go = asyncio.Event(), asyncio.Event()

    async def slow_write_back() -> None:
        writing.set()
        await go.wait()

    hooks.before_force = slow_write_back
    tick = asyncio.create_task(eng.upkeep())
    await writing.wait()
    asking = asyncio.create_task(eng.reserve("meanwhile", subject(), estimate()))
    await asyncio.sleep(0.05)
    go.set()
    await tick
    decision = await asking
    assert decision.admitted and not decision.degraded
    assert await remaining(eng) == [3]  # both counted in the store
