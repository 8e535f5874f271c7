"""Behaviour verdicts: a script that wants long answers in bulk is told from people, on
the evidence of its own requests, and a ring shows sooner than any of its accounts."""

from __future__ import annotations

import random
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.behaviour import (
    CLUSTER_ATTRIBUTE,
    MIN_REQUESTS,
    SUSPECT,
    TYPICAL,
    UNKNOWN,
    Behaviour,
    Stats,
    answered,
    quiet_share,
    suspicious,
)
from gateway.budget.decision import Subject
from gateway.metering import RequestEstimate
from tests.budget.helpers import NOON, Clock

ACCOUNT = "behaviour"


def ask(behaviour: Behaviour, subject: Subject, cap: int, output: int) -> str:
    """One request and its answer; the account's verdict as the request saw it."""
    seen = behaviour.annotate(subject, RequestEstimate("m", 500, cap, stream=False))
    behaviour.answered(seen, output)
    return seen.attributes[ACCOUNT]


def script(clock: Clock, behaviour: Behaviour, subject: Subject, n: int, seed: int = 0) -> str:
    """A distiller's script: Poisson arrivals ~ every 56 min, the largest cap, long answers."""
    rng = random.Random(seed)
    verdict = UNKNOWN
    for _ in range(n):
        clock.advance(rng.expovariate(1 / 3375))
        verdict = ask(behaviour, subject, 16_384, rng.choice([900, 1_500, 4_000, 300]))
    return verdict


def person(clock: Clock, behaviour: Behaviour, subject: Subject, days: int, seed: int = 0) -> str:
    """A person: sessions of a few turns 30 s apart in their daytime, 1 in 5 asking for a
    long answer; short answers otherwise."""
    rng = random.Random(seed)
    verdict = UNKNOWN
    for _ in range(days):
        start = clock.now
        for session in range(5):
            clock.now = start + 9 * 3600 + session * 2 * 3600 + rng.random() * 3600
            for _ in range(rng.randint(2, 6)):
                clock.advance(rng.expovariate(1 / 30))
                reasoning = rng.random() < 0.2
                cap, output = (16_384, 2_000) if reasoning else (1_024, 150)
                verdict = ask(behaviour, subject, cap, output)
        clock.now = start + 86_400
    return verdict


def test_a_script_is_unknown_until_it_has_shown_enough_then_suspect() -> None:
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    subject = Subject("a1", "o1", None, {"model": "m"})
    assert script(clock, behaviour, subject, MIN_REQUESTS - 1) == UNKNOWN
    assert script(clock, behaviour, subject, 10, seed=1) == SUSPECT
    assert set(behaviour.indicators("a:a1") or ()) >= {"cap", "steady"}


def test_people_are_typical_even_when_some_ask_for_long_answers() -> None:
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    verdicts = [
        person(clock, behaviour, Subject(f"p{i}", f"o{i}", None, {}), days=10, seed=i)
        for i in range(20)
    ]
    assert verdicts == [TYPICAL] * 20


def test_one_habit_alone_is_not_suspect() -> None:
    """A program that always sends a large cap but works in sessions for short answers."""
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    subject = Subject("app", "o1", None, {})
    verdict = UNKNOWN
    rng = random.Random(1)
    for _ in range(100):
        clock.advance(rng.choice([10.0, 20.0, 3_000.0]))
        verdict = ask(behaviour, subject, 16_384, 200)
    assert verdict == TYPICAL
    assert behaviour.indicators("a:app") == ("cap",)


def test_a_ring_is_suspect_before_any_of_its_accounts() -> None:
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    rng = random.Random(3)
    verdicts: dict[str, str] = {}
    for _ in range(30):  # 10 accounts, 3 requests each: none has shown enough on its own
        clock.advance(rng.expovariate(1 / 340))
        account = f"r{rng.randrange(10)}"
        subject = Subject(account, f"org-{account}", "ring-1", {})
        seen = behaviour.annotate(subject, RequestEstimate("m", 500, 16_384, stream=False))
        behaviour.answered(seen, 2_500)
        verdicts[account] = seen.attributes[ACCOUNT]
        cluster_verdict = seen.attributes[CLUSTER_ATTRIBUTE]
    assert set(verdicts.values()) == {UNKNOWN}
    assert cluster_verdict == SUSPECT


def test_a_caller_cannot_send_its_own_verdict() -> None:
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    subject = Subject("a1", None, None, {ACCOUNT: TYPICAL, CLUSTER_ATTRIBUTE: TYPICAL})
    seen = behaviour.annotate(subject, RequestEstimate("m", 1, 16_384, stream=False))
    assert seen.attributes[ACCOUNT] == UNKNOWN
    assert seen.attributes[CLUSTER_ATTRIBUTE] == UNKNOWN


def test_a_verdict_follows_a_change_of_habit() -> None:
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    subject = Subject("a1", "o1", None, {})
    assert script(clock, behaviour, subject, 60) == SUSPECT
    assert person(clock, behaviour, subject, days=28) == TYPICAL


def test_memory_is_bounded_by_the_least_recently_seen() -> None:
    clock = Clock(NOON)
    behaviour = Behaviour(clock, max_tracked=100)
    for i in range(1_000):
        behaviour.annotate(Subject(f"a{i}", None, f"c{i}", {}), RequestEstimate("m", 1, 1, False))
    assert len(behaviour) == 100
    assert behaviour.indicators("a:a999") is None  # known, not enough evidence
    assert behaviour.indicators("a:a0") is None and "a:a0" not in behaviour._stats


def test_weights_stay_finite_over_years() -> None:
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    subject = Subject("a1", "o1", None, {})
    script(clock, behaviour, subject, 30)
    clock.advance(3 * 365 * 86_400)
    assert script(clock, behaviour, subject, 30, seed=2) == SUSPECT
    stats = behaviour._stats["a:a1"]
    assert stats.requests < 1e6


@pytest.mark.parametrize(
    ("hours", "share"),
    [([1.0] * 24, 8 / 24), ([0.0] * 8 + [1.0] * 16, 0.0), ([0.0] * 24, 0.0)],
)
def test_quiet_share(hours: list[float], share: float) -> None:
    assert quiet_share(array("d", hours)) == pytest.approx(share)


def test_a_suspect_refused_for_weeks_stays_suspect() -> None:
    """Refused, it sends requests but gets no answers: the evidence of its answers thins,
    and the verdict stands instead of going back to unknown (a full allowance)."""
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    subject = Subject("a1", "o1", None, {})
    assert script(clock, behaviour, subject, 40) == SUSPECT
    for _ in range(600):  # four weeks of refused requests: arrivals, no answers
        clock.advance(3_375)
        seen = behaviour.annotate(subject, RequestEstimate("m", 500, 16_384, stream=False))
    assert seen.attributes[ACCOUNT] == SUSPECT


def test_answers_the_gateway_capped_are_no_evidence() -> None:
    """Capped to 256 tokens, a suspect's answers are short by the gateway's doing: counted,
    they would clear it, and it would get its full allowance back (then be caught again)."""
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    subject = Subject("a1", "o1", None, {})
    assert script(clock, behaviour, subject, 40) == SUSPECT
    rng = random.Random(5)
    for _ in range(200):
        clock.advance(rng.expovariate(1 / 3375))
        seen = behaviour.annotate(subject, RequestEstimate("m", 500, 16_384, stream=False))
        behaviour.answered(seen, 256, shaped=True)
    assert seen.attributes[ACCOUNT] == SUSPECT
    assert "long" in (behaviour.indicators("a:a1") or ())


def test_a_queue_worker_and_a_reasoning_team_are_not_suspect() -> None:
    """Every habit but long answers (a worker every 5 minutes, day and night, at a large
    cap, for short answers), or long answers at a large cap in sessions by day: neither
    is a distiller."""
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    worker = Subject("worker", "o1", None, {})
    for _ in range(300):
        clock.advance(300)
        verdict = ask(behaviour, worker, 8_192, 120)
    assert verdict == TYPICAL
    found = set(behaviour.indicators("a:worker") or ())
    assert {"cap", "steady", "round_the_clock"} <= found and "long" not in found
    team = Subject("team", "o2", None, {})
    rng = random.Random(4)
    for _ in range(10):
        start = clock.now
        for session in range(4):
            clock.now = start + 9 * 3600 + session * 7200
            for _ in range(4):
                clock.advance(rng.expovariate(1 / 40))
                verdict = ask(behaviour, team, 16_384, rng.choice([600, 2_500, 4_000]))
        clock.now = start + 86_400
    assert verdict == TYPICAL
    assert {"cap", "long"} <= set(behaviour.indicators("a:team") or ())


def test_a_caught_ring_that_changes_its_habits_stays_suspect_for_days() -> None:
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    subject = Subject("a1", "o1", None, {})
    assert script(clock, behaviour, subject, 60) == SUSPECT
    assert person(clock, behaviour, subject, days=2) == SUSPECT  # washed, but held
    assert person(clock, behaviour, subject, days=20) == TYPICAL


def test_a_batch_counts_each_request_and_its_reservation_is_no_answer() -> None:
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    subject = Subject("b1", "o1", None, {})
    batch = RequestEstimate("m", 500, 30 * 1_024, stream=False, requests=30, detached=True)
    seen = behaviour.annotate(subject, batch)
    assert not answered(batch) and answered(RequestEstimate("m", 1, 1, False))
    assert behaviour._stats["a:b1"].seen_requests == 30
    assert seen.attributes[ACCOUNT] == UNKNOWN


def test_answers_without_output_are_no_evidence() -> None:
    """Errors and disconnects (0 tokens) would dilute the long answers' share for free."""
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    subject = Subject("a1", "o1", None, {})
    assert script(clock, behaviour, subject, 40) == SUSPECT
    for _ in range(100):
        clock.advance(3_375)
        behaviour.answered(behaviour.annotate(subject, RequestEstimate("m", 1, 16_384, False)), 0)
    assert "long" in (behaviour.indicators("a:a1") or ())


def test_a_suspect_account_carries_its_verdict_into_a_new_cluster() -> None:
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    alone = Subject("a1", "o1", None, {})
    assert script(clock, behaviour, alone, 40) == SUSPECT
    linked = Subject("a1", "o1", "linked-9", {})
    seen = behaviour.annotate(linked, RequestEstimate("m", 1, 16_384, False))
    assert seen.attributes[CLUSTER_ATTRIBUTE] == SUSPECT


def test_a_slow_account_is_judged_in_the_end() -> None:
    """1.5 requests a day: decayed counts level off near 15, under the threshold; the
    evidence threshold counts every request seen."""
    clock = Clock(NOON)
    behaviour = Behaviour(clock)
    subject = Subject("slow", "o1", None, {})
    rng = random.Random(2)
    verdict = UNKNOWN
    for _ in range(40):
        clock.advance(rng.expovariate(1.5 / 86_400))
        verdict = ask(behaviour, subject, 16_384, 3_000)
    assert verdict == SUSPECT


def test_a_flood_of_new_identities_does_not_wash_out_a_suspect() -> None:
    clock = Clock(NOON)
    behaviour = Behaviour(clock, max_tracked=50)
    subject = Subject("a1", "o1", None, {})
    assert script(clock, behaviour, subject, 40) == SUSPECT
    for i in range(500):
        behaviour.annotate(Subject(f"x{i}", None, None, {}), RequestEstimate("m", 1, 1, False))
    assert len(behaviour) == 50
    seen = behaviour.annotate(subject, RequestEstimate("m", 1, 16_384, False))
    assert seen.attributes[ACCOUNT] == SUSPECT


@given(
    shares=st.lists(st.floats(0, 1), min_size=4, max_size=4),
    hours=st.lists(st.floats(0, 50), min_size=24, max_size=24),
    seen=st.integers(0, 300),
)
def test_the_verdict_skips_the_hours_only_where_they_cannot_change_it(
    shares: list[float], hours: list[float], seen: int
) -> None:
    """The verdict computes round-the-clock only when long and one other habit fired; the
    verdict must be what all four indicators say, whatever the evidence."""
    stats = Stats(0.0)
    stats.seen_requests = seen
    stats.seen_answers = seen // 2
    stats.requests = stats.gaps = stats.answers = 100.0
    stats.at_cap, stats.long, stats.short_gaps = (100.0 * x for x in shares[:3])
    stats.hours = array("d", hours)
    every = stats.indicators(0.0)
    assert stats.verdict(0.0) == (
        UNKNOWN if every is None else SUSPECT if suspicious(every) else TYPICAL
    )
