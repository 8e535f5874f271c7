"""``scale_by``: limits multiplied by a number the trusted edge sends (verified seats), so
a large verified customer keeps what its size earns while the base stays small."""

from __future__ import annotations

from dataclasses import replace

from gateway.budget.decision import Subject
from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.budget.store import CounterStore
from gateway.policy.model import Metric, Unit
from tests.budget.helpers import Clock, estimate, limit, policy, policy_set


async def admitted(eng: BudgetEngine, seats: str | None, count: int) -> int:
    attributes = {"model": "m"} if seats is None else {"model": "m", "seats": seats}
    who = Subject(f"acct-{seats}", "o1", attributes=attributes)
    return sum(
        [(await eng.reserve(f"{seats}-{n}", who, estimate())).admitted for n in range(count)]
    )


async def test_limits_scale_with_the_seats_the_edge_reports(store: CounterStore) -> None:
    per_seat = replace(policy("per-seat", limit(Metric.REQUESTS, 2, Unit.DAY)), scale_by="seats")
    eng = BudgetEngine(store, PolicyHolder(policy_set(per_seat)), clock=Clock())
    assert await admitted(eng, "5", 20) == 10
    assert await admitted(eng, None, 5) == 2  # no attribute: the base limit
    assert await admitted(eng, "lots", 5) == 2  # not a number: the base limit
    assert await admitted(eng, "0", 5) == 2  # never below the base
