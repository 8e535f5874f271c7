"""A population's exchanges, one simulated day at a time.

Each group (the background, a scenario's customers, the campaign) draws each day from its
own generator, seeded by the seed, the group and the day, so a run holds one day of events
at a time (never the whole period), a day's events are the same whoever draws them, and a
worker replaying some of the accounts draws exactly what a single process does. A
legitimate session that starts before midnight and runs past it is carried into the next
day; one running past the last day is dropped.

Every exchange has a serial number, counted per group from the first day: its request id,
and for the campaign its residential-proxy address (unique per request).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import numpy.typing as npt

from gateway.simulation.campaign import (
    CHAT_INPUT,
    CHAT_OUTPUT,
    DAY,
    MAX_TOKENS_CHAT,
    MAX_TOKENS_LONG,
    REASONING_OUTPUT,
    REASONING_SHARE,
    SESSION_GAP,
    SESSION_MEAN,
    TOKENS_PER_SECOND,
)

_Z = (0.0, 1.2816, 2.3263)
_DAILY = 1  # a day's generator is seeded with (seed, group, _DAILY, day)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Events:
    """One row per exchange, sorted by time."""

    time: FloatArray
    duration: FloatArray
    account: IntArray
    input_tokens: IntArray
    output_tokens: IntArray  # what the upstream would generate if admitted
    max_tokens: IntArray
    serial: IntArray  # per group, from the first day: the request id (and proxy address)

    def __len__(self) -> int:
        return len(self.time)

    def rows(self, keep: npt.NDArray[np.bool_] | IntArray) -> Events:
        return Events(*(getattr(self, f.name)[keep] for f in fields(Events)))

    @staticmethod
    def joined(parts: list[Events]) -> Events:
        return Events(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Events))
        )


@dataclass(frozen=True, slots=True)
class Legit:
    """A legitimate group: sessions in the daily rhythm from each organization's volume."""

    group: int
    organization: IntArray  # per account (an organization's accounts are consecutive)
    volume: FloatArray  # per organization, requests a day
    first_account: int  # the group's first row among all accounts


@dataclass(frozen=True, slots=True)
class Campaign:
    """The campaign: Poisson arrivals around the clock, at ``rate`` a day per account."""

    group: int
    accounts: int
    rate: float
    first_account: int


Source = Legit | Campaign

_NO_INTS = np.zeros(0, np.int64)
_NONE = Events(np.zeros(0), np.zeros(0), _NO_INTS, _NO_INTS, _NO_INTS, _NO_INTS, _NO_INTS)


def quantile_sampler(
    rng: np.random.Generator, quantiles: tuple[float, float, float], n: int, cap: float
) -> IntArray:
    """Draws matching p50, p90 and p99 exactly: log-value is piecewise linear in a normal z.

    One lognormal cannot match all three public percentiles (their tails are lighter than
    the median-to-p90 spread implies), so each segment has its own slope; below p50 the
    first slope continues, above p99 the second.
    """
    z = rng.standard_normal(n)
    logs = np.log(np.asarray(quantiles))
    low = (logs[1] - logs[0]) / (_Z[1] - _Z[0])
    high = (logs[2] - logs[1]) / (_Z[2] - _Z[1])
    value = np.where(z <= _Z[1], logs[0] + low * z, logs[1] + high * (z - _Z[1]))
    clipped: IntArray = np.clip(np.rint(np.exp(value)), 1, cap).astype(np.int64)
    return clipped


def rhythm(days: int) -> FloatArray:
    """Relative arrival weight of each hour: busiest mid-afternoon UTC, weekends at half."""
    hours = np.arange(days * 24)
    hour_of_day = hours % 24
    weekday = (hours // 24 + 2) % 7  # 22 April 2026 is a Wednesday (Monday = 0)
    weight = 1.0 + 0.8 * np.cos(2 * math.pi * (hour_of_day - 15) / 24)
    weight = weight * np.where(weekday >= 5, 0.5, 1.0)
    return np.asarray(weight / weight.sum(), dtype=np.float64)


class Days:
    """Draws the sources' events day by day (``__iter__``: one ``Events`` a day, in time
    order, times as offsets from the first midnight)."""

    def __init__(self, seed: int, sources: tuple[Source, ...], days: int, start: float) -> None:
        self.seed, self.sources, self.days, self.start = seed, sources, days, start
        self._rhythm = rhythm(days)

    def __iter__(self) -> Iterator[Events]:
        serials = [0] * len(self.sources)
        carried = [_NONE] * len(self.sources)
        for day in range(self.days):
            parts = []
            for i, source in enumerate(self.sources):
                rng = np.random.default_rng([self.seed, source.group, _DAILY, day])
                drawn = self._draw(rng, source, day, serials[i])
                serials[i] += len(drawn)
                drawn = Events.joined([carried[i], drawn])
                ends = (day + 1) * DAY
                carried[i] = drawn.rows(drawn.time >= ends)
                parts.append(drawn.rows(drawn.time < ends))
            today = Events.joined(parts)
            today = today.rows(np.argsort(today.time, kind="stable"))
            yield replace(today, time=today.time + self.start)

    def _draw(self, rng: np.random.Generator, source: Source, day: int, serial: int) -> Events:
        if isinstance(source, Campaign):
            per_account = rng.poisson(source.rate, source.accounts)
            account = np.repeat(np.arange(source.accounts), per_account)
            n = len(account)
            times = (day + rng.random(n)) * DAY
            input_tokens = quantile_sampler(rng, CHAT_INPUT, n, 200_000)
            output = quantile_sampler(rng, REASONING_OUTPUT, n, MAX_TOKENS_LONG)
            cap = np.full(n, MAX_TOKENS_LONG)
        else:
            times, account = self._sessions(rng, source, day)
            n = len(times)
            reasoning = rng.random(n) < REASONING_SHARE
            output = np.where(
                reasoning,
                quantile_sampler(rng, REASONING_OUTPUT, n, MAX_TOKENS_LONG),
                quantile_sampler(rng, CHAT_OUTPUT, n, MAX_TOKENS_CHAT),
            )
            input_tokens = quantile_sampler(rng, CHAT_INPUT, n, 200_000)
            cap = np.where(reasoning, MAX_TOKENS_LONG, MAX_TOKENS_CHAT)
        return Events(
            time=times,
            duration=0.5 + output / TOKENS_PER_SECOND,
            account=account + source.first_account,
            input_tokens=input_tokens,
            output_tokens=output,
            max_tokens=cap,
            serial=serial + np.arange(n),
        )

    def _sessions(
        self, rng: np.random.Generator, source: Legit, day: int
    ) -> tuple[FloatArray, IntArray]:
        """Bursty arrivals: sessions start with the daily rhythm, each a few requests long;
        the sessions of a period of ``days`` days, those starting on ``day``."""
        weights = self._rhythm[day * 24 : (day + 1) * 24]
        share = float(weights.sum())
        orgs = len(source.volume)
        sessions = rng.poisson(source.volume * self.days * share / SESSION_MEAN)
        session_org = np.repeat(np.arange(orgs), sessions)
        n = len(session_org)
        hour = day * 24 + rng.choice(24, size=n, p=weights / share)
        session_start = (hour + rng.random(n)) * 3600.0
        length = rng.geometric(1.0 / SESSION_MEAN, n)
        # Each session belongs to one account of its organization.
        organization = source.organization
        first = np.searchsorted(organization, np.arange(orgs))
        count = np.bincount(organization, minlength=orgs)
        session_account = (first[session_org] + rng.random(n) * count[session_org]).astype(np.int64)
        owner = np.repeat(np.arange(n), length)
        gaps = rng.exponential(SESSION_GAP, len(owner))
        # Offsets within a session: cumulative gaps since the session's first request (at 0).
        cumulative = np.cumsum(gaps)
        starts = np.cumsum(length) - length
        offset = cumulative - cumulative[starts][owner]
        times = session_start[owner] + offset
        keep = times < self.days * DAY
        return times[keep], session_account[owner][keep]
