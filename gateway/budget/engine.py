"""The budget engine: reserve at admission, settle at the end, over a counter store.

Policies and the subject become buckets (``buckets.plan``); the store debits them all
at once and answers per bucket; this module turns that answer into a ``Decision``.
When the store fails, each enforced policy's ``on_storage_error`` chooses: ``open``
decides with a per-replica ``MemoryStore`` holding the same limits (``degraded``),
``closed`` raises ``StorageUnavailable``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from gateway.budget.buckets import OverrideLookup, Planned, actual_costs, plan, plan_usage
from gateway.budget.decision import Decision, LimitStatus, Refusal, Subject
from gateway.budget.holder import PolicyHolder
from gateway.budget.outage import Outage
from gateway.budget.store import BucketState, CounterStore, Reservation
from gateway.errors import StorageError, StorageUnavailable
from gateway.metering import RequestEstimate, Usage
from gateway.policy.model import OnStorageError, Scope
from gateway.storage.budget_memory import MemoryStore

RESERVATION_TTL = 660.0  # the upstream timeout (600 s) plus a margin


class BudgetEngine:
    """Reserve and settle budgets for requests.

    ``clock`` (epoch seconds) replaces the store's own time (Redis ``TIME``) when given:
    simulations and tests move it. ``reservation_ttl`` is how long an unsettled
    reservation holds its tokens and concurrency slot before any reserve releases it.
    ``overrides`` gives a scope id's live limits (``LiveOverrides.limits``), applied on top
    of every policy of that scope.
    """

    def __init__(
        self,
        store: CounterStore,
        policies: PolicyHolder,
        *,
        reservation_ttl: float = RESERVATION_TTL,
        clock: Callable[[], float] | None = None,
        fallback: CounterStore | None = None,
        outage: Outage | None = None,
        overrides: OverrideLookup | None = None,
    ) -> None:
        self.store = store
        self.policies = policies
        self.reservation_ttl = reservation_ttl
        self._clock = clock
        self.fallback = fallback if fallback is not None else MemoryStore()
        self.outage = outage if outage is not None else Outage()
        self.overrides = overrides

    async def reserve(
        self, request_id: str, subject: Subject, estimate: RequestEstimate
    ) -> Decision:
        scope_ids = {scope: subject.scope_id(scope) for scope in Scope}
        planned = plan(
            self.policies.current,
            subject.attributes,
            scope_ids,
            estimate,
            self.overrides,
            subject.cluster_organizations,
        )
        if not planned:
            return Decision(request_id=request_id, admitted=True)
        buckets = [p.bucket for p in planned]
        now = self._now()
        if not self.outage.skip():
            try:
                found = await self.store.reserve(
                    request_id, buckets, ttl=self.reservation_ttl, now=now
                )
            except StorageError as exc:
                self.outage.failed("reserve", exc)
            else:
                self.outage.answered()
                return _decision(request_id, planned, found, degraded=False)
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
        found = await self.fallback.reserve(request_id, buckets, ttl=self.reservation_ttl, now=now)
        return _decision(request_id, planned, found, degraded=True)

    async def settle(self, request_id: str, usage: Usage | None) -> None:
        """Replace the reservation by ``usage`` (None: nothing generated). Never raises
        ``StorageError``: a settle the store misses is released when its record expires."""
        actual = actual_costs(usage)
        now = self._now()
        if await self.fallback.settle(request_id, actual, now=now):
            return
        try:
            await self.store.settle(request_id, actual, now=now)
        except StorageError as exc:
            self.outage.failed("settle", exc)
        else:
            self.outage.answered()

    async def usage(
        self, scope: Scope, scope_id: str, attributes: Mapping[str, str] | None = None
    ) -> list[LimitStatus]:
        """Where one scope id stands in every policy of ``scope`` that applies to
        ``attributes`` (every such policy when None), debiting nothing."""
        planned = plan_usage(self.policies.current, scope, scope_id, attributes, self.overrides)
        states = await self.store.peek([p.bucket for p in planned], now=self._now())
        return [_status(p, s) for p, s in zip(planned, states, strict=True)]

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()


def _status(p: Planned, state: BucketState) -> LimitStatus:
    return LimitStatus(p.policy.name, p.policy.scope, p.limit, state.remaining, state.reset_seconds)


def _refusal(p: Planned, state: BucketState) -> Refusal:
    return Refusal(
        policy=p.policy.name,
        scope=p.policy.scope,
        scope_id=p.scope_id,
        limit=p.limit,
        requested=p.bucket.cost,
        retry_after=state.retry_after,
        shadow=not p.enforced,
    )


def _binding(refusals: Sequence[Refusal]) -> Refusal:
    """The refusal that lasts longest binds; one that can never fit lasts forever."""
    return max(refusals, key=lambda r: math.inf if r.retry_after is None else r.retry_after)


def _decision(
    request_id: str, planned: Sequence[Planned], found: Reservation, *, degraded: bool
) -> Decision:
    pairs = list(zip(planned, found.states, strict=True))
    statuses = tuple(_status(p, s) for p, s in pairs if p.enforced)
    if not found.admitted:
        refused = [_refusal(p, s) for p, s in pairs if p.enforced and not s.fits]
        return Decision(
            request_id, False, refusal=_binding(refused), statuses=statuses, degraded=degraded
        )
    # Each shadow policy is its own group: report the refusal that would have bound it.
    by_group: dict[int, list[Refusal]] = {}
    for p, s in pairs:
        if not p.enforced and not s.fits:
            by_group.setdefault(p.bucket.group, []).append(_refusal(p, s))
    shadow = tuple(_binding(group) for group in by_group.values())
    return Decision(request_id, True, shadow_refusals=shadow, statuses=statuses, degraded=degraded)
