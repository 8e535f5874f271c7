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
    pairs = list(zip(planned, found.states, strict=True))
    refusing = [p for p, state in pairs if p.enforced and not state.fits]
    if not refusing or any(
        p.policy.action is not Action.CAP or p.limit.metric not in _SHAPED for p in refusing
    ):
        return None
    room = [
        state.remaining - (estimate.input_tokens if p.limit.metric is Metric.TOKENS else 0)
        for p, state in pairs
        if p.enforced and p.limit.metric in _SHAPED
    ]
    cap = min(room)
    if cap < max(p.policy.min_output_tokens for p in refusing):
        return None
    return cap if cap < estimate.max_output_tokens else None


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
