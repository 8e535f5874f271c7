"""The tarpit: where ``action: slow`` holds a request that does not fit until it does.

A slow policy answers a request it refuses not with 429 but with time: the request waits
(``retry_after``, as the refusal computed it) and is reserved again, as often as it takes
while the total wait stays within the policy's ``max_delay``. A person sees latency; a
script that fans out sees its wall time and its connections held. What is held reserves
nothing, so a client that leaves while held owes nothing and releases nothing.

At most ``limit`` requests are held at once per process: past that a flood is refused as
usual, never held without bound. The clock and the sleep are injected (tests move time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio

from gateway.budget.decision import Decision
from gateway.policy.model import Action, PolicySet

log = logging.getLogger("gateway.admission")

MAX_HELD = 1000  # requests held at once per process, by default
MIN_WAIT = 0.05  # seconds: a wait shorter than this is taken as this, so a retry is no spin

Sleep = Callable[[float], Awaitable[None]]


class Tarpit:
    def __init__(
        self,
        limit: int = MAX_HELD,
        *,
        sleep: Sleep = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._sleep = sleep
        self._clock = clock
        self._held: dict[str, anyio.CancelScope] = {}

    @property
    def held(self) -> int:
        """Requests held now."""
        return len(self._held)

    async def hold(
        self,
        request_id: str,
        decision: Decision,
        policy_set: PolicySet,
        again: Callable[[], Awaitable[Decision]],
    ) -> tuple[Decision, float]:
        """The decision after holding ``request_id`` while slow policies alone refuse it
        and it fits within their ``max_delay`` (``again`` reserves anew), and the seconds
        it was held. A full tarpit, or a client that left, ends the hold: the last decision
        (a refusal) stands."""
        started = self._clock()
        held = False  # never held: 0 s, not the microseconds slow_wait took to say so
        while (wait := slow_wait(decision, policy_set, self._clock() - started)) is not None:
            if len(self._held) >= self.limit:
                log.warning("tarpit full request_id=%s held=%d", request_id, len(self._held))
                break
            scope = anyio.CancelScope()
            self._held[request_id] = scope
            try:
                with scope:
                    await self._sleep(max(wait, MIN_WAIT))
            finally:
                del self._held[request_id]
            held = True
            if scope.cancel_called:
                break  # the client left: nothing was reserved for it
            decision = await again()
        return decision, (self._clock() - started) if held else 0.0

    def leave(self, request_id: str) -> None:
        """The client of ``request_id`` disconnected: stop holding it."""
        scope = self._held.get(request_id)
        if scope is not None:
            scope.cancel()


def slow_wait(decision: Decision, policy_set: PolicySet, waited: float) -> float | None:
    """How long to hold a refused request before reserving it again: when every limit
    that refused it belongs to an ``action: slow`` policy and has room again after
    ``retry_after`` seconds, within the smallest ``max_delay`` less ``waited``; else None."""
    if decision.admitted or not decision.refusals:
        return None
    policies = {policy.name: policy for policy in policy_set.policies}
    delays: list[float] = []
    for refusal in decision.refusals:
        policy = policies.get(refusal.policy)
        if policy is None or policy.action is not Action.SLOW or refusal.retry_after is None:
            return None
        delays.append(policy.max_delay)
    wait = max(refusal.retry_after or 0.0 for refusal in decision.refusals)
    return wait if waited + wait <= min(delays) else None
