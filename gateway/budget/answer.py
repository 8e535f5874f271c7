"""A store's answer to a reserve, read: the decision, its refusals and limit statuses, and
the lower output cap an ``action: cap`` policy would admit."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gateway.budget.buckets import Planned
from gateway.budget.decision import Decision, LimitStatus, Refusal
from gateway.budget.store import BucketState, Reservation
from gateway.metering import RequestEstimate
from gateway.policy.model import Action, Metric, Mode

_SHAPED = (Metric.TOKENS, Metric.OUTPUT_TOKENS)


def shaped_cap(
    planned: Sequence[Planned], found: Reservation, estimate: RequestEstimate
) -> int | None:
    """The output cap that fits every token budget, when only ``action: cap`` policies'
    token limits refused, and it is at least their ``min_output_tokens``; else None."""
    cap, least = estimate.max_output_tokens, 0
    refused = False
    for p, state in zip(planned, found.states, strict=True):
        policy, metric = p.policy, p.limit.metric
        if policy.mode is not Mode.ENFORCE:
            continue
        shaped = metric in _SHAPED
        if not state.fits:
            if policy.action is not Action.CAP or not shaped:
                return None
            refused = True
            least = max(least, policy.min_output_tokens)
        if shaped:
            room = state.remaining - (estimate.input_tokens if metric is Metric.TOKENS else 0)
            cap = min(cap, room)
    if not refused or cap < least or cap >= estimate.max_output_tokens:
        return None
    return cap


def status(p: Planned, state: BucketState) -> LimitStatus:
    return LimitStatus(p.policy.name, p.policy.scope, p.limit, state.remaining, state.reset_seconds)


def _refusal(p: Planned, state: BucketState, shadow: bool) -> Refusal:
    return Refusal(
        policy=p.policy.name,
        scope=p.policy.scope,
        scope_id=p.scope_id,
        limit=p.limit,
        requested=p.bucket.cost,
        retry_after=state.retry_after,
        shadow=shadow,
    )


def _binding(refusals: Sequence[Refusal]) -> Refusal:
    """The refusal that lasts longest binds; one that can never fit lasts forever."""
    return max(refusals, key=lambda r: math.inf if r.retry_after is None else r.retry_after)


def decision_from(
    request_id: str, planned: Sequence[Planned], found: Reservation, *, degraded: bool
) -> Decision:
    """Refused: every enforced limit that lacked room, the longest binding. Admitted: per
    shadow policy (each its own group) the refusal that would have bound it."""
    admitted = found.admitted
    statuses, refused = [], []
    by_group: dict[int, list[Refusal]] = {}
    for p, s in zip(planned, found.states, strict=True):
        policy = p.policy
        if policy.mode is Mode.ENFORCE:
            statuses.append(
                LimitStatus(policy.name, policy.scope, p.limit, s.remaining, s.reset_seconds)
            )
            if not s.fits:
                refused.append(_refusal(p, s, False))
        elif admitted and not s.fits:
            by_group.setdefault(p.bucket.group, []).append(_refusal(p, s, True))
    if not admitted:
        refusals = tuple(refused)
        return Decision(
            request_id,
            False,
            _binding(refusals),
            (),
            tuple(statuses),
            degraded,
            refusals=refusals,
        )
    shadow = tuple(_binding(group) for group in by_group.values())
    return Decision(
        request_id, True, shadow_refusals=shadow, statuses=tuple(statuses), degraded=degraded
    )
