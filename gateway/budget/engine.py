"""The budget engine: reserve at admission, settle at the end, over a counter store.

Policies and the subject become buckets (``buckets.plan``); the store debits them all
at once and answers per bucket; this module turns that answer into a ``Decision``.

When the store fails, each enforced policy's ``on_storage_error`` chooses: ``open``
decides with a per-replica ``MemoryStore`` (``degraded``), ``closed`` raises
``StorageUnavailable``. A busy store (``StorageBusy``) is neither: the request is shed; so
is one whose call timed out while the breaker stays shut (the store answers the others).

The ledger stays exact through faults (docs/reliability.md):

- a reserve whose answer was lost (it may have run, or may still run late) is released
  once the store answers again, and the late one then debits nothing;
- every reservation names this replica; ``upkeep``, run every few seconds, heartbeats,
  keeps the running exchanges' reservations alive (a stream longer than the TTL stays
  held and charged), expires those of replicas that stopped heartbeating (their
  concurrency slots come back, their tokens stay charged), and retries what failed;
- the fallback admits each limit's last known remainder divided by the replicas alive
  before the outage, so the fleet together admits no more than the limit, and what it
  admitted is written back to the store when it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from gateway.budget.answer import decision_from, shaped_cap, status
from gateway.budget.buckets import OverrideLookup, Planned, Planner, actual_costs, plan_usage
from gateway.budget.decision import Decision, LimitStatus, Subject
from gateway.budget.holder import PolicyHolder
from gateway.budget.outage import Outage
from gateway.budget.store import Bucket, CounterStore, Reservation
from gateway.errors import StorageBusy, StorageError, StorageUnavailable
from gateway.metering import RequestEstimate, Usage
from gateway.policy.model import OnStorageError, Scope
from gateway.storage.budget_memory import MemoryStore

log = logging.getLogger("gateway.budget")
SLOW = "The rate-limit store did not answer in time; retry in 1 s."
_T = TypeVar("_T")

# Running exchanges are extended every upkeep tick, so the TTL bounds only how long a
# reservation outlives an exchange whose extensions stopped (a stalled store); a dead
# replica's reservations are expired by the others' upkeep after DEAD_AFTER seconds.
RESERVATION_TTL = 60.0
UPKEEP_INTERVAL = 5.0
RECOVERY_INTERVAL = 1.0
DEAD_AFTER = 15.0  # three missed heartbeats: slots back within DEAD_AFTER + one tick
# The replica count is the most seen this long: every live replica heartbeats within one
# upkeep interval, so a heartbeat set read right after a restart empty, missing the others,
# does not shrink the fallback's divisor (each would admit the whole remainder alone).
REPLICAS_HOLD = DEAD_AFTER / 2
MAX_REMEMBERED = 100_000  # bucket remainders, failed settles: bounded per replica


class BudgetEngine:
    """Reserve and settle budgets for requests.

    ``clock`` (epoch seconds) replaces the store's own time (Redis ``TIME``) when given:
    simulations and tests move it. ``reservation_ttl`` is how long an unsettled
    reservation holds its tokens and concurrency slot before any reserve releases it.
    ``overrides`` gives a scope id's live limits (``LiveOverrides.limits``), applied on top
    of every policy of that scope. ``fallback=False`` keeps no remainders for the fallback:
    for a store that never fails (a replay's memory), where keeping them cost time.
    """

    def __init__(
        self,
        store: CounterStore,
        policies: PolicyHolder,
        *,
        reservation_ttl: float = RESERVATION_TTL,
        clock: Callable[[], float] | None = None,
        outage: Outage | None = None,
        overrides: OverrideLookup | None = None,
        replica: str | None = None,
        min_replicas: int = 1,
        fallback: bool = True,
    ) -> None:
        self.store = store
        self.policies = policies
        self.reservation_ttl = reservation_ttl
        self._clock = clock
        self.outage = outage if outage is not None else Outage()
        self.overrides = overrides
        self.replica = replica or uuid.uuid4().hex[:16]
        # Replicas that heartbeat through the store, as last seen (the fallback's divisor).
        self.replicas = max(1, min_replicas)
        self._min_replicas = max(1, min_replicas)
        self._replicas_at = -math.inf  # when ``replicas`` was last seen as many
        self.fallback = MemoryStore()
        self._live: dict[str, Sequence[Bucket]] = {}  # reserved in the store, not settled
        self._uncertain: OrderedDict[str, None] = OrderedDict()  # reserves to release
        self._unsettled: OrderedDict[str, dict[str, int]] = OrderedDict()  # settles to retry
        self._local: dict[str, tuple[MemoryStore, list[Bucket]]] = {}  # fallback admissions
        self._owed: dict[str, tuple[Bucket, int]] = {}  # settled locally, to write back
        # A write-back sent but not known written: sent again under the same id until it is.
        self._sealed: tuple[str, list[tuple[Bucket, int]]] | None = None
        self._batch = 0
        # One write-back at a time: requests arriving meanwhile wait for it (they must not
        # count from a store that misses what this replica admitted alone).
        self._reconciling = asyncio.Lock()
        self._remaining: OrderedDict[str, int] = OrderedDict()  # bucket key → last remaining
        # Bucket key → written back since the store last answered for it (``_took_alone``).
        self._alone: OrderedDict[str, int] = OrderedDict()
        self._written = 0  # write-backs done: an answer sent before one does not include it
        self._planner = Planner()
        self._keep_remaining = fallback

    async def reserve(
        self, request_id: str, subject: Subject, estimate: RequestEstimate
    ) -> Decision:
        decision, planned, found = await self._attempt(request_id, subject, estimate)
        if decision.admitted or found is None or not estimate.shapeable:
            return decision
        cap = shaped_cap(planned, found, estimate)
        if cap is None:
            return decision
        # An ``action: cap`` policy refused only for the output asked: try again with the
        # output that fits (a request no longer fitting by then is refused as it was).
        smaller = replace(estimate, max_output_tokens=cap)
        again, _, _ = await self._attempt(request_id, subject, smaller)
        if not again.admitted:
            return decision
        return replace(again, capped_output=cap, refusals=decision.refusals)

    async def _attempt(
        self, request_id: str, subject: Subject, estimate: RequestEstimate
    ) -> tuple[Decision, Sequence[Planned], Reservation | None]:
        planned = self._planner.plan(self.policies.current, subject, estimate, self.overrides)
        if not planned:
            return Decision(request_id=request_id, admitted=True), planned, None
        buckets = [p.bucket for p in planned]
        now = self._now()
        if not self.outage.skip():
            try:
                if self._local or self._owed or self._sealed:
                    # The store answers again: what this replica admitted alone goes in
                    # first, so that no limit is counted from a store that misses it.
                    await self._reconcile(now)
                written = self._written
                found = await self.store.reserve(
                    request_id, buckets, ttl=self.reservation_ttl, now=now, owner=self.replica
                )
            except StorageBusy:
                self.outage.busy()
                raise  # back-pressure: shed, never an outage
            except StorageError as exc:
                self.outage.failed("reserve", exc)
                if exc.maybe_applied:
                    _remember(self._uncertain, request_id, None)
                if not self.outage.down:  # a timeout; the store answers the others:
                    # alone, this would be a second decider for each limit. Shed it.
                    raise StorageBusy(SLOW, retry_after=1.0) from exc
            else:
                self.outage.answered()
                if found.admitted:
                    self._live[request_id] = buckets
                    # The store holds this id now: a lost copy of it (a capped retry's
                    # first try) can only find it and do nothing. Releasing it as lost
                    # would drop the reservation of an exchange about to run.
                    self._uncertain.pop(request_id, None)
                if found.repeated:
                    return Decision(request_id=request_id, admitted=True), planned, None
                if self._keep_remaining:
                    self._note_remaining(planned, found, fresh=written == self._written)
                return decision_from(request_id, planned, found, degraded=False), planned, found
        closed = next(
            (
                p
                for p in planned
                if p.enforced and p.policy.on_storage_error is OnStorageError.CLOSED
            ),
            None,
        )
        if closed is not None:
            retry = max(1.0, self.outage.probe_interval)
            raise StorageUnavailable(
                f"The rate-limit store is unavailable and policy '{closed.policy.name}' admits "
                f"nothing without it; retry in {math.ceil(retry)} s.",
                retry_after=retry,
            )
        shares = [self._share(b) for b in buckets]
        found = await self.fallback.reserve(
            request_id, shares, ttl=self.reservation_ttl, now=now, owner=self.replica
        )
        if found.admitted:
            self._local[request_id] = (self.fallback, buckets)
        return decision_from(request_id, planned, found, degraded=True), planned, found

    async def settle(self, request_id: str, usage: Usage | None) -> None:
        """Replace the reservation by ``usage`` (None: nothing generated). Never raises
        ``StorageError``: a settle the store misses is retried by ``upkeep`` (meanwhile
        the reservation may expire, keeping its tokens; the retry corrects that)."""
        actual = actual_costs(usage)
        now = self._now()
        local = self._local.pop(request_id, None)
        if local is not None:
            store, buckets = local
            await store.settle(request_id, actual, now=now, owner=self.replica)
            self._owe(buckets, actual)
            return
        self._live.pop(request_id, None)
        try:
            await self.store.settle(request_id, actual, now=now, owner=self.replica)
        except StorageError as exc:
            self.outage.failed("settle", exc)
            _remember(self._unsettled, request_id, actual)
        else:
            self.outage.answered()

    async def upkeep(self) -> None:
        """One tick: heartbeat and expire what dead replicas held, extend what runs here,
        then write back what was admitted without the store, release lost reserves and
        retry missed settles. Stops at the first failure (the next tick goes on)."""
        now = self._now()
        try:
            done = await self.store.upkeep(self.replica, dead_after=DEAD_AFTER, now=now)
            self.outage.answered()  # now, not after the write-back: see docs/reliability.md
            self._count_replicas(done.replicas, time.time() if now is None else now)
            if done.reaped:
                log.warning(
                    "Expired %d reservations of replicas that stopped heartbeating.", done.reaped
                )
            live, ttl = list(self._live), self.reservation_ttl
            if await self.store.extend(live, ttl=ttl, now=now, owner=self.replica) < len(live):
                await self._hold_again(now)
            async with self._reconciling:
                # Written back first, released after: a lost copy that ran and was also
                # admitted alone then counts twice a moment, never zero times (another
                # replica asking in between was admitted past the limit). Under the lock,
                # so that no request's write-back of the same id is under way meanwhile
                # (released first, the write-back met the tombstone and held nothing).
                await self._write_back(now)
                await self._release_lost(now)
            for request_id, actual in list(self._unsettled.items()):
                await self.store.settle(request_id, actual, now=now, owner=self.replica)
                del self._unsettled[request_id]
        except StorageBusy:
            return
        except StorageError as exc:
            self.outage.failed("upkeep", exc)

    async def _hold_again(self, now: float | None) -> None:
        # The store forgot running exchanges (restarted empty, or a fail-over lost them):
        # their slots were free to others and their settles would count nothing. Each is
        # written again as the reservation it is; one the store holds is left as it is.
        ttl, me = self.reservation_ttl, self.replica
        for request_id, buckets in list(self._live.items()):
            if request_id in self._live:  # not settled meanwhile
                await self.store.reserve(
                    request_id, buckets, ttl=ttl, now=now, owner=me, force=True
                )

    async def _release_lost(self, now: float | None) -> None:
        for request_id in list(self._uncertain):
            if request_id in self._local:
                # Admitted here since the write-back: it will be written as the reservation
                # it is (idempotent, so a copy that ran is not doubled).
                del self._uncertain[request_id]
                continue
            await self.store.release(
                request_id, ttl=self.reservation_ttl, now=now, owner=self.replica
            )
            del self._uncertain[request_id]

    def _count_replicas(self, seen: int, at: float) -> None:
        seen = max(self._min_replicas, seen)
        if seen >= self.replicas or at - self._replicas_at >= REPLICAS_HOLD:
            self.replicas, self._replicas_at = seen, at

    async def run(self, interval: float = UPKEEP_INTERVAL) -> None:
        """``upkeep`` every ``interval`` seconds until cancelled; the first at once. Every
        second while something waits to be written back: after an outage, a limit may be
        exceeded by what the other replicas admitted alone until they have written it."""
        while True:
            await self.upkeep()
            await asyncio.sleep(min(interval, RECOVERY_INTERVAL) if self.pending_work else interval)

    async def _reconcile(self, now: float | None) -> None:
        """Write what this replica admitted alone into the store: each exchange still
        running as the reservation it is (whatever the limits say now: it runs; its slot
        is held, and its settle goes to the store), each finished one as its real usage,
        once (a batch id makes a repeat after a lost answer do nothing). Then start the
        next outage's count afresh. Raises StorageError, leaving the rest for later."""
        async with self._reconciling:
            await self._write_back(now)

    async def _write_back(self, now: float | None) -> None:
        for request_id in list(self._local):
            held = self._local.pop(request_id, None)
            if held is None:
                continue
            # Live from now: a settle arriving while this call runs goes to the store,
            # where this reservation is about to be.
            self._live[request_id] = held[1]
            try:
                await self.store.reserve(
                    request_id,
                    held[1],
                    ttl=self.reservation_ttl,
                    now=now,
                    owner=self.replica,
                    force=True,
                )
            except StorageError:
                if self._live.pop(request_id, None) is not None:  # running: written next time
                    self._local[request_id] = held
                raise
            # Written as the reservation it is: a lost reserve of this id that ran is now
            # this one (the forced write found it and did nothing). Releasing it as lost
            # would give back the slot and spend of an exchange that runs or ran.
            self._uncertain.pop(request_id, None)
            self._took_alone((b, b.cost) for b in held[1])
        while self._sealed is not None or self._owed:
            if self._sealed is None:
                self._batch += 1
                self._sealed = (f"{self.replica}-{self._batch}", list(self._owed.values()))
                self._owed.clear()
            batch, debits = self._sealed
            await self.store.debit(debits, now=now, batch=batch)
            self._sealed = None
            self._took_alone(debits)
        if not self._local and not self._owed:
            self.fallback = MemoryStore()

    def _took_alone(self, debits: Iterable[tuple[Bucket, int]]) -> None:
        # The fallback count starts afresh after a write-back, but the remainder it divides
        # is still the one last answered: what was admitted alone comes out of the share
        # (else each write-back gave a fresh share: every answer lost, 30 admitted of 10).
        self._written += 1
        for bucket, cost in debits:
            if cost > 0:
                _remember(self._alone, bucket.key, self._alone.get(bucket.key, 0) + cost)

    @property
    def pending_work(self) -> int:
        """Lost reserves, missed settles and local admissions still to write to the store."""
        sealed = 0 if self._sealed is None else len(self._sealed[1])
        pending = len(self._uncertain) + len(self._unsettled) + len(self._owed)
        return pending + len(self._local) + sealed

    def _share(self, bucket: Bucket) -> Bucket:
        """The part of a limit this replica may admit alone: what was left when the store
        last answered (the whole limit if this replica never saw the bucket), divided by
        the replicas alive then. Rounded down, so the fleet together stays within it."""
        left = self._remaining.get(bucket.key, bucket.amount)
        share = min(bucket.amount, left) // max(1, self.replicas)
        return replace(bucket, amount=max(0, share - self._alone.get(bucket.key, 0)))

    def _note_remaining(
        self, planned: Sequence[Planned], found: Reservation, *, fresh: bool
    ) -> None:
        # Concurrency too: slots held in the store when it went away stay held meanwhile.
        # An answer sent before a write-back finished does not count it: what was taken
        # alone is then kept (counted twice until the next answer: conservative).
        for p, state in zip(planned, found.states, strict=True):
            _remember(self._remaining, p.bucket.key, state.remaining)
            if fresh:
                self._alone.pop(p.bucket.key, None)

    def _owe(self, buckets: Sequence[Bucket], actual: Mapping[str, int]) -> None:
        for bucket in buckets:
            cost = actual.get(bucket.metric, bucket.cost)
            if cost > 0 and bucket.window != "inflight":
                self._add_owed(bucket, cost)

    def _add_owed(self, bucket: Bucket, cost: int) -> None:
        held = self._owed.get(bucket.key)
        self._owed[bucket.key] = (bucket, cost + (held[1] if held is not None else 0))

    async def usage(
        self, scope: Scope, scope_id: str, attributes: Mapping[str, str] | None = None
    ) -> list[LimitStatus]:
        """Where one scope id stands in every policy of ``scope`` that applies to
        ``attributes`` (every such policy when None), debiting nothing."""
        planned = plan_usage(self.policies.current, scope, scope_id, attributes, self.overrides)
        states = await self.store.peek([p.bucket for p in planned], now=self._now())
        return [status(p, s) for p, s in zip(planned, states, strict=True)]

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()


def _remember(held: OrderedDict[str, _T], key: str, value: _T) -> None:
    held[key] = value
    held.move_to_end(key)
    while len(held) > MAX_REMEMBERED:
        held.popitem(last=False)
