"""Admission: the one place where identity and the budget engine meet the proxy.

``Gate.admit`` turns a request into a Caller and a Decision, or raises: Unauthenticated
(401), Refused (429, with the sentence and headers the client sees) or StorageUnavailable
(503). A request only ``action: slow`` policies refuse is held in the tarpit
(``gateway.tarpit``) until it fits, within their ``max_delay``. A refusal (or cap) by a
policy with a ``problem`` carries its type and detail. ``Gate.settle`` is a usage hook:
it hands the finished exchange's real usage to the engine, which replaces the reservation
with it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from gateway.apis import ApiShape
from gateway.behaviour import Behaviour, answered
from gateway.behaviour import in_use as behaviour_in_use
from gateway.budget.decision import Decision, LimitStatus, Refusal, Subject
from gateway.clusters import ClusterDirectory
from gateway.errors import StorageUnavailable, Unauthenticated
from gateway.identity import AuthFailures, Caller, identify, peer_address, throttle_key
from gateway.metering import Outcome, RequestEstimate, Usage, UsageRecord
from gateway.policy.model import Metric, PolicySet, RefusalProblem, Scope
from gateway.routing import RouteTable
from gateway.shadow import ShadowRecorder
from gateway.tarpit import Tarpit

log = logging.getLogger("gateway.admission")


class Refused(Exception):
    """A request the gateway will not forward: 429 with this message and these headers."""

    def __init__(
        self,
        message: str,
        headers: list[tuple[bytes, bytes]],
        admission: Admission | None = None,
        problem_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers
        self.admission = admission  # the refusing decision, for the usage hooks
        self.problem_type = problem_type  # the refusing policy's ``problem.type``, if any


@dataclass(frozen=True, slots=True)
class Admission:
    caller: Caller
    decision: Decision
    shown: tuple[LimitStatus, ...] = ()  # the statuses rate-limit headers may show
    delayed_s: float = 0.0  # held by an ``action: slow`` policy this long first
    problem: RefusalProblem | None = None  # of the policy that refused or capped it


class Engine(Protocol):
    async def reserve(
        self, request_id: str, subject: Subject, estimate: RequestEstimate
    ) -> Decision: ...

    async def settle(self, request_id: str, usage: Usage | None) -> None: ...


class PolicySource(Protocol):
    @property
    def current(self) -> PolicySet: ...


class Gate:
    """``clusters`` resolves each caller's linked-account cluster before the engine
    reserves (without it every account is a cluster of one); ``shadow`` tallies what
    shadow policies would have refused."""

    def __init__(
        self,
        policies: PolicySource,
        engine: Engine,
        auth_failures: AuthFailures | None = None,
        *,
        clusters: ClusterDirectory | None = None,
        shadow: ShadowRecorder | None = None,
        behaviour: Behaviour | None = None,
        tarpit: Tarpit | None = None,
    ) -> None:
        self.policies = policies
        self.engine = engine
        self.auth_failures = auth_failures or AuthFailures()
        self.clusters = clusters
        self.shadow = shadow
        self.tarpit = tarpit if tarpit is not None else Tarpit()  # where action slow holds
        # Verdicts policies can read (``behaviour``, ``cluster_behaviour``); tracked only
        # while some policy reads them.
        self.behaviour = behaviour if behaviour is not None else Behaviour(time.time)
        self._behaviour_read: tuple[PolicySet | None, bool] = (None, False)
        self._private: tuple[PolicySet | None, frozenset[str]] = (None, frozenset())
        self._routes: tuple[PolicySet | None, RouteTable] = (None, RouteTable(()))

    def routes(self) -> RouteTable:
        """The running policy set's route table, compiled once per policy set."""
        policy_set = self.policies.current
        if self._routes[0] is not policy_set:
            self._routes = (policy_set, RouteTable(policy_set.routes))
        return self._routes[1]

    async def identify(self, scope: Mapping[str, Any], headers: Mapping[str, str]) -> Caller:
        """Who is asking, from the headers alone: a caller with no identity never makes the
        gateway read its body. Raises Unauthenticated (401), or Refused (429) for an
        address that failed authentication too often."""
        policy_set = self.policies.current
        identity = policy_set.identity
        peer = peer_address(scope)
        key = throttle_key(identity, headers, peer)
        if key is not None and await self.auth_failures.blocked(key):
            raise Refused(
                "Too many failed authentication attempts from this address; wait a minute.",
                [(b"retry-after", b"60")],
            )
        try:
            return identify(identity, scope, headers, policy_set.clusters.link_by)
        except Unauthenticated:
            if key is not None:
                await self.auth_failures.record(key)
            raise

    async def admit(
        self, request_id: str, caller: Caller, estimate: RequestEstimate, fmt: ApiShape
    ) -> Admission:
        """Reserve the estimate for ``caller`` in every policy that applies; Refused (429)
        or StorageUnavailable (503) when it does not fit."""
        policy_set = self.policies.current
        attributes = {**caller.subject.attributes, "model": estimate.model}
        caller = replace(caller, subject=replace(caller.subject, attributes=attributes))
        if self.clusters is not None:
            subject = await self.clusters.resolve(
                caller.subject, caller.signals, policy_set.clusters
            )
            caller = replace(caller, subject=subject)
        if self._reads_behaviour(policy_set):
            subject = self.behaviour.annotate(caller.subject, estimate)
            caller = replace(caller, subject=subject)
        hide = undisclosed(policy_set)

        async def reserve() -> Decision:
            return await self._reserve(request_id, caller.subject, estimate, hide)

        decision, delayed = await self.tarpit.hold(request_id, await reserve(), policy_set, reserve)
        if self.shadow is not None:
            self.shadow.record(decision, estimate)
        for shadow in decision.shadow_refusals:
            log.info(
                "shadow refusal request_id=%s policy=%s scope=%s limit=%s",
                request_id,
                shadow.policy,
                shadow.scope.value,
                shadow.limit.text,
            )
        if delayed > 0:
            log.info("slowed request_id=%s delayed_s=%.3f", request_id, delayed)
        disclose = not hide
        shown = visible_statuses(decision.statuses, policy_set.clusters.disclose)
        problem = policy_problem(policy_set, decision)
        if not decision.admitted and decision.refusal is not None:
            refusal = decision.refusal
            log.info(
                "refused request_id=%s policy=%s scope=%s limit=%s",
                request_id,
                refusal.policy,
                refusal.scope.value,
                refusal.limit.text,
            )
            # Undisclosed, every refusal reads alike whatever scope refused: one sentence,
            # retry-after alone, and no counter that shows the account itself had room.
            headers_out = (
                [
                    (name.encode("latin-1"), value.encode("latin-1"))
                    for name, value in fmt.rate_limit_headers(shown, time.time())
                ]
                if disclose
                else []
            )
            if refusal.retry_after is not None:
                retry = max(1, math.ceil(refusal.retry_after))
                headers_out.insert(0, (b"retry-after", str(retry).encode()))
            message = refusal_message(refusal, disclose)
            if problem is not None:
                # The policy author's own words and link, shown by choice even undisclosed.
                message = f"{message} {problem.detail}"
                headers_out.append((b"link", help_link(problem).encode()))
            admission = Admission(caller, decision, delayed_s=delayed, problem=problem)
            problem_type = None if problem is None else problem.type
            raise Refused(message, headers_out, admission, problem_type)
        return Admission(caller, decision, shown, delayed_s=delayed, problem=problem)

    async def _reserve(
        self, request_id: str, subject: Subject, estimate: RequestEstimate, hide: bool
    ) -> Decision:
        try:
            return await self.engine.reserve(request_id, subject, estimate)
        except StorageUnavailable as exc:
            if not hide:
                raise
            raise StorageUnavailable(
                f"The rate-limit store is unavailable; retry in {math.ceil(exc.retry_after)} s.",
                exc.retry_after,
            ) from exc

    def leave(self, request_id: str) -> None:
        """The client of ``request_id`` disconnected: a hold of it ends at once."""
        self.tarpit.leave(request_id)

    def private_headers(self) -> frozenset[str]:
        """Headers the trusted edge sets for the gateway alone (identity, attributes, link
        signals): the model API gets none of them, so a clear payment fingerprint or device
        id never leaves this hop."""
        policy_set = self.policies.current
        if self._private[0] is not policy_set:  # once per policy set, not per request
            identity = policy_set.identity
            names = {identity.account_header, identity.organization_header}
            names.update(identity.attribute_headers.values())
            names.update(s.header for s in policy_set.clusters.link_by if s.header is not None)
            self._private = (policy_set, frozenset(name.lower() for name in names if name))
        return self._private[1]

    async def settle(self, record: UsageRecord, admission: Admission | None) -> None:
        """Replace the reservation by what the exchange really used. Only a request that
        never reached the upstream is released whole; one that may have been read there
        keeps at least its input charged (the proxy puts that in ``record.usage``)."""
        if admission is None or not admission.decision.admitted:
            return
        sent = record.outcome is not Outcome.UPSTREAM_UNREACHED
        await self.engine.settle(record.request_id, record.usage if sent else None)
        if sent and answered(record.estimate) and self._reads_behaviour(self.policies.current):
            shaped = admission.decision.capped_output is not None
            self.behaviour.answered(admission.caller.subject, record.usage.output_tokens, shaped)

    def _reads_behaviour(self, policy_set: PolicySet) -> bool:
        if self._behaviour_read[0] is not policy_set:  # once per policy set
            self._behaviour_read = (policy_set, behaviour_in_use(policy_set))
        return self._behaviour_read[1]


def undisclosed(policy_set: PolicySet) -> bool:
    """Whether refusals must hide which scope refused: cluster policies exist and
    ``clusters.disclose`` is false. Without cluster policies there is no link to hide, and a
    refusal names its policy and limit."""
    return not policy_set.clusters.disclose and any(
        policy.scope is Scope.CLUSTER for policy in policy_set.policies
    )


def policy_problem(policy_set: PolicySet, decision: Decision) -> RefusalProblem | None:
    """The ``problem`` of the policy that refused (or capped) the request: the binding
    refusal's policy first, then any other that lacked room."""
    refusals = (
        decision.refusals if decision.refusal is None else (decision.refusal, *decision.refusals)
    )
    names = [refusal.policy for refusal in refusals]
    problems = {p.name: p.problem for p in policy_set.policies if p.problem is not None}
    return next((problems[name] for name in names if name in problems), None)


def help_link(problem: RefusalProblem) -> str:
    """The ``link`` header pointing to the problem's page (RFC 8288)."""
    return f'<{problem.type}>; rel="help"'


def visible_statuses(statuses: Sequence[LimitStatus], disclose: bool) -> tuple[LimitStatus, ...]:
    """The statuses rate-limit headers may show. Undisclosed, a cluster limit's remaining
    would fall with other accounts' spend and so tell a caller it is linked to them."""
    if disclose:
        return tuple(statuses)
    return tuple(s for s in statuses if s.scope is not Scope.CLUSTER)


_METRIC_WORDS = {
    Metric.REQUESTS: "requests",
    Metric.TOKENS: "tokens",
    Metric.INPUT_TOKENS: "input tokens",
    Metric.OUTPUT_TOKENS: "output tokens",
    Metric.CONCURRENT: "requests in flight",
}


def refusal_message(refusal: Refusal, disclose: bool) -> str:
    """One sentence a person can act on. Undisclosed (``clusters.disclose: false``), the
    same sentence for every scope, so that a refusal never tells a caller it is linked."""
    if not disclose:
        if refusal.retry_after is None:
            return (
                "Rate limit exceeded; this request is larger than a limit allows (lower "
                "max_tokens or send less input)."
            )
        return f"Rate limit exceeded; retry after {max(1, math.ceil(refusal.retry_after))} s."
    limit = refusal.limit
    words = _METRIC_WORDS[limit.metric]
    per = f" per {limit.unit.value}" if limit.unit is not None else " at once"
    allows = (
        f"policy '{refusal.policy}' allows {limit.amount:,} {words}{per} "
        f"for this {refusal.scope.value}"
    )
    if refusal.retry_after is None:
        if limit.amount == 0:
            return f"Blocked: {allows}."
        hint = "; lower max_tokens" if limit.metric is not Metric.REQUESTS else ""
        return f"This request needs {refusal.requested:,} {words} but {allows}{hint}."
    return f"Rate limit exceeded: {allows}; retry after {max(1, math.ceil(refusal.retry_after))} s."
