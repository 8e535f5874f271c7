"""The per-replica refusal history: a minute per slot, the last hour, labels never ids."""

from __future__ import annotations

from gateway.admin.refusals import MAX_SERIES, RefusalHistory
from gateway.answers import Answer, Reason
from gateway.metering import Outcome


def answer(reason: Reason | None, policy: str = "") -> Answer:
    status = 429 if reason is not None else 200
    return Answer(status, reason, policy, "anthropic", Outcome.REFUSED, 0.01)


def test_an_hour_of_minutes_by_reason_and_policy() -> None:
    now = [1_000 * 60.0]
    history = RefusalHistory(clock=lambda: now[0])
    history.record(answer(Reason.RATE_LIMIT, "free"))
    now[0] += 30 * 60
    history.record(answer(Reason.RATE_LIMIT, "free"))
    history.record(answer(Reason.RATE_LIMIT, "free"))
    history.record(answer(Reason.STORAGE_UNAVAILABLE))
    history.record(answer(None))  # the upstream's answer: not a refusal
    history.record(answer(Reason.UPSTREAM_TIMEOUT))  # a failure, not a refusal
    first, series = history.series()
    assert first == now[0] - 59 * 60
    assert [(s.reason, s.policy, s.total) for s in series] == [
        ("rate_limit", "free", 3),
        ("storage_unavailable", "", 1),
    ]
    assert series[0].per_minute[-1] == 2 and series[0].per_minute[-31] == 1
    now[0] += 30 * 60  # the first refusal is now an hour old
    _, series = history.series()
    assert [(s.reason, s.total) for s in series] == [("rate_limit", 2), ("storage_unavailable", 1)]
    now[0] += 60 * 60
    assert history.series()[1] == []


def test_past_the_series_cap_new_labels_count_as_other() -> None:
    history = RefusalHistory(clock=lambda: 0.0)
    for i in range(MAX_SERIES + 5):
        history.record(answer(Reason.RATE_LIMIT, f"policy-{i}"))
    _, series = history.series()
    assert len(series) == MAX_SERIES + 1
    assert next(s for s in series if s.reason == "other").total == 5
