"""The per-replica top-spender tally: bounded, never understated, new each UTC day."""

from __future__ import annotations

import random

import pytest

from gateway.admin.spenders import DAY, SpaceSaving, Spenders
from gateway.policy.model import Scope


def test_heavy_hitters_survive_a_long_tail_in_a_bounded_table() -> None:
    table = SpaceSaving(capacity=20)
    rng = random.Random(7)
    true: dict[str, int] = {}
    # Space-saving keeps every id above total / capacity (here about 18,000 tokens) and
    # overstates any id by at most that: the two heavy ids rank first, whatever the order.
    stream = [("whale", 500)] * 200 + [("shark", 300)] * 200
    stream += [(f"acct-{i}", rng.randint(1, 40)) for i in range(10_000)]
    rng.shuffle(stream)
    for key, weight in stream:
        table.add(key, weight)
        true[key] = true.get(key, 0) + weight
    assert len(table) == 20
    top = table.top(2)
    assert [s.scope_id for s in top] == ["whale", "shark"]
    for spender in table.top(20):
        assert spender.tokens - spender.error <= true[spender.scope_id] <= spender.tokens


def test_the_tally_starts_again_at_utc_midnight() -> None:
    now = [3 * DAY + DAY - 1.0]
    spenders = Spenders(clock=lambda: now[0])
    spenders.add(Scope.ACCOUNT, "acct-1", 100)
    assert [s.scope_id for s in spenders.top(Scope.ACCOUNT, 5)] == ["acct-1"]
    assert spenders.day_started_at == 3 * DAY
    now[0] += 2  # past midnight, nothing new yet: yesterday's ranking is not today's
    assert spenders.top(Scope.ACCOUNT, 5) == []
    spenders.add(Scope.ACCOUNT, "acct-2", 5)
    assert [(s.scope_id, s.tokens) for s in spenders.top(Scope.ACCOUNT, 5)] == [("acct-2", 5)]
    assert spenders.day_started_at == 4 * DAY


def test_nothing_spent_is_not_a_spender() -> None:
    spenders = Spenders()
    spenders.add(Scope.ORGANIZATION, "org-1", 0)
    assert spenders.top(Scope.ORGANIZATION, 5) == []
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        SpaceSaving(0)
