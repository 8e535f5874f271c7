"""Behaviour: how an account and its cluster use the API, for what linking cannot see.

A distillation campaign wants long answers in bulk, so its accounts ask for the largest
output cap every time, get long answers as the rule, send steadily (one request at a time
from a script, not in bursts of a person's session) and send around the clock. People
send in sessions, in their own daytime, mostly for short answers. Four indicators, each
a share over the account's (or cluster's) recent requests:

- ``cap``: requests whose output cap is at least ``LARGE_CAP``;
- ``long``: answers of at least ``LONG_OUTPUT`` tokens, among the answers seen;
- ``steady``: gaps after the account's previous request shorter than ``SHORT_GAP``
  (a session's next turn) are rare;
- ``round_the_clock``: the quietest 8 hours of the day (UTC hours, in a circle, so any
  time zone has its night there) hold about a third of the requests, as in a flat day.

With enough evidence (``MIN_REQUESTS`` requests and ``MIN_ANSWERS`` answers), two or more
indicators make the verdict ``suspect``, fewer ``typical``; with less, ``unknown``. Two are
needed so that no single habit condemns (many honest programs always send a large cap, a
CI farm runs at night), and a campaign that changes one habit still shows the others.
Policies read the verdicts as attributes: ``behaviour`` (the account's) and
``cluster_behaviour`` (its linked cluster's, which pools its accounts' requests, so a ring
shows its habits many times sooner than any one of its accounts).

Computed online, per replica, in memory, with no storage round trip: every indicator is
a share, so a replica that sees a fraction of an account's traffic estimates the same
shares (it needs that many more requests to reach the evidence threshold). Counts decay
with a half-life of ``HALF_LIFE`` so a verdict follows a change of habit. Memory is
bounded: at most ``MAX_TRACKED`` accounts and clusters, the least recently seen dropped
first. Only counts are kept: no prompt, no answer, no id beyond the key it is counted under.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.metering import RequestEstimate

if TYPE_CHECKING:
    from gateway.budget.decision import Subject
    from gateway.policy.model import PolicySet

ACCOUNT_ATTRIBUTE = "behaviour"
CLUSTER_ATTRIBUTE = "cluster_behaviour"
ATTRIBUTES = (ACCOUNT_ATTRIBUTE, CLUSTER_ATTRIBUTE)
UNKNOWN, TYPICAL, SUSPECT = "unknown", "typical", "suspect"

LARGE_CAP = 8_192  # output cap only long-form generation asks for (chat apps ask 1-4k)
LONG_OUTPUT = 1_000  # tokens: past every chat answer's p99 (601), a reasoning answer's p50
SHORT_GAP = 120.0  # seconds: a session's next turn (people: 30 s mean between turns)
QUIET_HOURS = 8
HALF_LIFE = 7 * 86_400.0
MIN_REQUESTS = 10
MIN_ANSWERS = 5
MIN_REQUESTS_CLOCK = 96  # a flat day and a person's day differ clearly from about here

CAP_SHARE = 0.8  # people: about 1 in 5 of their requests
LONG_SHARE = 0.25  # people: under 1 in 10; the campaign about 4 in 10
STEADY_SHARE = 0.1  # people: about 3 in 4 gaps are a session's; a script's Poisson stream 1 in 30
CLOCK_SHARE = 0.2  # people: about 0.11 in their quietest 8 hours; a flat day 0.33
SUSPECT_INDICATORS = 2  # besides ``long``
SUSPECT_HOLD = 3 * 86_400.0  # clean evidence needed to clear a suspect

MAX_TRACKED = 200_000
EVICT_SKIPS = 16  # suspects passed over per eviction, at most
_RESCALE = 2.0**40  # weights grow as 2^(t/HALF_LIFE); renormalised past this


class Stats:
    """One key's decayed counts. Each new event weighs 2^((t - origin) / HALF_LIFE), so
    older ones count for less without touching them; shares are ratios of weights."""

    __slots__ = (
        "answers",
        "at_cap",
        "gaps",
        "hours",
        "last_arrival",
        "last_suspect",
        "last_verdict",
        "long",
        "origin",
        "requests",
        "seen_answers",
        "seen_requests",
        "short_gaps",
        "updated",
    )

    def __init__(self, now: float) -> None:
        self.origin = now
        self.updated = now
        self.last_arrival = -math.inf
        self.last_verdict = UNKNOWN
        self.last_suspect = -math.inf  # when the evidence last said suspect
        # Lifetime counts for the evidence threshold: decayed counts level off at the rate
        # times ~10 days, so a slow account would never reach it.
        self.seen_requests = self.seen_answers = 0
        self.requests = self.at_cap = self.gaps = self.short_gaps = 0.0
        self.answers = self.long = 0.0
        self.hours = array("d", bytes(8 * 24))

    def weight(self, now: float) -> float:
        w: float = 2.0 ** ((now - self.origin) / HALF_LIFE)
        if w > _RESCALE:
            self._rescale(w)
            w = 1.0
        self.updated = max(self.updated, now)
        return w

    def _rescale(self, w: float) -> None:
        for name in ("requests", "at_cap", "gaps", "short_gaps", "answers", "long"):
            setattr(self, name, getattr(self, name) / w)
        for hour in range(24):
            self.hours[hour] /= w
        self.origin += HALF_LIFE * math.log2(w)

    def arrival(self, now: float, at_cap: bool, gap: float | None, count: int = 1) -> None:
        w = self.weight(now) * count
        self.seen_requests += count
        self.requests += w
        if at_cap:
            self.at_cap += w
        if gap is not None:
            self.gaps += w
            if gap < SHORT_GAP:
                self.short_gaps += w
        self.hours[int(now // 3600.0) % 24] += w

    def answer(self, now: float, output_tokens: int) -> None:
        w = self.weight(now)
        self.seen_answers += 1
        self.answers += w
        if output_tokens >= LONG_OUTPUT:
            self.long += w

    def evidence(self, now: float) -> float:
        """Requests seen, decayed to ``now``."""
        scale: float = 2.0 ** ((self.origin - now) / HALF_LIFE)
        return self.requests * scale

    def indicators(self, now: float, *, needed: bool = False) -> tuple[str, ...] | None:
        """The indicators that fire, or None without enough evidence. With ``needed``,
        the hour-of-day test (the costly one) only where it can change the verdict."""
        if self.seen_requests < MIN_REQUESTS or self.seen_answers < MIN_ANSWERS:
            return None
        found = []
        if self.at_cap >= CAP_SHARE * self.requests:
            found.append("cap")
        if self.long >= LONG_SHARE * self.answers:
            found.append("long")
        if self.gaps > 0 and self.short_gaps <= STEADY_SHARE * self.gaps:
            found.append("steady")
        if needed and not ("long" in found and len(found) == SUSPECT_INDICATORS):
            return tuple(found)  # suspicious or not whatever the hours say
        if self.seen_requests >= MIN_REQUESTS_CLOCK and quiet_share(self.hours) >= CLOCK_SHARE:
            found.append("round_the_clock")
        return tuple(found)

    def verdict(self, now: float) -> str:
        """The verdict on the evidence; once there is a verdict, it stands while the
        evidence thins (a suspect refused for a week sends requests but gets no answers
        to judge: it stays suspect until its answers say otherwise)."""
        found = self.indicators(now, needed=True)
        if found is None:
            return self.last_verdict
        if suspicious(found):
            self.last_suspect = now
            self.last_verdict = SUSPECT
        elif now - self.last_suspect >= SUSPECT_HOLD:
            # Cleared only after SUSPECT_HOLD of clean evidence: a ring that changes its
            # habits the day it is caught does not get its allowance back the next.
            self.last_verdict = TYPICAL
        return self.last_verdict


def suspicious(found: tuple[str, ...]) -> bool:
    """Long answers, and two more habits of a script: long answers are what a distiller
    wants (without them there is nothing worth taking), and no single other habit
    condemns (a queue worker sends a large cap steadily for short answers; a team on a
    reasoning model asks a large cap for long answers, in sessions, by day)."""
    return "long" in found and len(found) > SUSPECT_INDICATORS


def quiet_share(hours: array[float]) -> float:
    """The share of requests in the quietest ``QUIET_HOURS`` consecutive hours (circular)."""
    total = sum(hours)
    if total <= 0:
        return 0.0
    window = sum(hours[:QUIET_HOURS])
    quietest = window
    for start in range(1, 24):
        window += hours[(start + QUIET_HOURS - 1) % 24] - hours[start - 1]
        quietest = min(quietest, window)
    return max(0.0, quietest) / total


def answered(estimate: RequestEstimate | None) -> bool:
    """Whether an exchange's settled output is an answer to judge: a batch or a detached
    request is settled at its reservation (what it may cost), not at what was written."""
    return estimate is not None and estimate.requests == 1 and not estimate.detached


def in_use(policy_set: PolicySet) -> bool:
    """Whether any policy reads a verdict: otherwise nothing is tracked."""
    return any(
        key in ATTRIBUTES for policy in policy_set.policies for key, _ in policy.match
    ) or any(policy.scale_by in ATTRIBUTES for policy in policy_set.policies)


class Behaviour:
    """Per-replica behaviour of accounts and clusters. ``annotate`` each request as it
    arrives (its verdicts become attributes), ``answered`` each answer's output."""

    def __init__(self, clock: Callable[[], float], max_tracked: int = MAX_TRACKED) -> None:
        self._clock = clock
        self._max = max_tracked
        self._stats: OrderedDict[str, Stats] = OrderedDict()

    def __len__(self) -> int:
        return len(self._stats)

    def _get(self, key: str, now: float) -> Stats:
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = Stats(now)
            if len(self._stats) > self._max:
                self._evict()
        else:
            self._stats.move_to_end(key)
        return stats

    def _evict(self) -> None:
        """Drop the least recently seen key, passing over a few suspects: a flood of new
        identities must not wash a suspect's evidence out of memory."""
        for _ in range(EVICT_SKIPS):
            key, stats = next(iter(self._stats.items()))
            if stats.last_verdict != SUSPECT:
                break
            self._stats.move_to_end(key)
        self._stats.popitem(last=False)

    def annotate(self, subject: Subject, estimate: RequestEstimate) -> Subject:
        """Count the request, and return ``subject`` with the verdicts as attributes
        (replacing any a caller sent: only the gateway says what behaviour it saw)."""
        now = self._clock()
        account = self._get("a:" + subject.account, now)
        gap = now - account.last_arrival if account.last_arrival > -math.inf else None
        account.last_arrival = now
        count = max(1, estimate.requests)  # a batch is that many requests
        at_cap = estimate.max_output_tokens >= LARGE_CAP * count
        account.arrival(now, at_cap, gap, count)
        verdicts = {ACCOUNT_ATTRIBUTE: account.verdict(now)}
        if subject.cluster is not None:
            cluster = self._get("c:" + subject.cluster, now)
            cluster.arrival(now, at_cap, gap, count)
            # A suspect account carries its verdict into any cluster it joins (a fresh
            # link would otherwise start it over with no evidence).
            own = verdicts[ACCOUNT_ATTRIBUTE]
            verdicts[CLUSTER_ATTRIBUTE] = SUSPECT if own == SUSPECT else cluster.verdict(now)
        else:  # a cluster of one behaves as its account does
            verdicts[CLUSTER_ATTRIBUTE] = verdicts[ACCOUNT_ATTRIBUTE]
        return subject.with_attributes({**subject.attributes, **verdicts})

    def answered(self, subject: Subject, output_tokens: int, shaped: bool = False) -> None:
        """Count an answer of ``output_tokens`` for ``subject`` (as ``annotate`` returned it).
        An answer the gateway capped (``shaped``) is short by the gateway's doing, not the
        caller's, and one with no output (an upstream error, a client gone) shows nothing
        of what the caller wants: neither is counted (else they would dilute ``long``)."""
        if shaped or output_tokens <= 0:
            return
        now = self._clock()
        self._get("a:" + subject.account, now).answer(now, output_tokens)
        if subject.cluster is not None:
            self._get("c:" + subject.cluster, now).answer(now, output_tokens)

    def indicators(self, key: str) -> tuple[str, ...] | None:
        """For operators and tests: the indicators of ``a:<account>`` or ``c:<cluster>``."""
        stats = self._stats.get(key)
        return None if stats is None else stats.indicators(self._clock())
