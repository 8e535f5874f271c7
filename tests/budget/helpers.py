"""Small builders for budget tests: a settable clock, policies, estimates."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.budget.decision import Subject
from gateway.metering import RequestEstimate
from gateway.policy.model import (
    IdentityConfig,
    Limit,
    Metric,
    Mode,
    OnStorageError,
    Policy,
    PolicySet,
    Scope,
    Unit,
)

NOON = datetime(2026, 6, 5, 12, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limit(metric: Metric, amount: int, unit: Unit | None = None) -> Limit:
    return Limit(metric, amount, unit)


def policy(
    name: str,
    *limits: Limit,
    scope: Scope = Scope.ACCOUNT,
    mode: Mode = Mode.ENFORCE,
    on_storage_error: OnStorageError = OnStorageError.OPEN,
    match: tuple[tuple[str, str], ...] = (),
) -> Policy:
    return Policy(name, scope, limits, match=match, mode=mode, on_storage_error=on_storage_error)


def policy_set(*policies: Policy) -> PolicySet:
    return PolicySet(version="test", sources=(), identity=IdentityConfig(), policies=policies)


def estimate(input_tokens: int = 0, max_output_tokens: int = 0) -> RequestEstimate:
    return RequestEstimate("m", input_tokens, max_output_tokens, stream=False)


def subject(account: str = "a1", organization: str | None = "o1") -> Subject:
    return Subject(account, organization, attributes={"model": "m"})
