"""Synthetic traffic: legitimate organizations, a distillation campaign and customer shapes.

Everything is drawn from ``numpy.random.Generator``s seeded by the caller, so a seed gives
the same events. Shapes come from /work/shared/design-notes.md (public traces):

- **Background** (legitimate): ``orgs`` organizations, each with a lognormal daily volume
  (sigma 2, so the top tenth send about three quarters), 1 + Poisson(2) accounts paying with
  the organization's card, each on its own device, an office NAT or two (some NATs shared by
  several organizations), arrivals in sessions (bursts) whose starts follow a daily and
  weekly rhythm; the busiest ``verified_share`` of organizations carry ``verified=true`` (an
  edge attribute). Four in five requests are conversations (input p50/p90/p99
  1,020/2,730/4,140, output 129/424/601, max_tokens 1,024), one in five asks for reasoning
  (output 810/4,170/13,530).
- **Campaign** (a scenario's ``CampaignShape``): ``campaign_accounts`` accounts, Poisson
  arrivals at 25.6 a day around the clock, conversation-sized prompts and reasoning-sized
  answers (a distiller wants long answers, and the reasoning trace is the longest public
  shape), max_tokens 16,384; who shares which card, device and organization is the shape's
  (shapes.py). Each request comes through a residential proxy from its own IPv6 /56, so no
  two requests share an address prefix and addresses link nothing.
- **Customers** (a scenario's ``CustomerShape``): legitimate accounts that share like a ring
  (shapes.py), with the background's arrivals and token shapes, never verified. They are
  drawn from their own generator, so the background and the campaign are the same events
  in every scenario of a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from gateway.simulation.campaign import (
    CAMPAIGN_ACCOUNTS,
    CHAT_INPUT,
    CHAT_OUTPUT,
    DAY,
    DAYS,
    LEGIT_ORGS,
    MAX_TOKENS_CHAT,
    MAX_TOKENS_LONG,
    REASONING_OUTPUT,
    REASONING_SHARE,
    SESSION_GAP,
    SESSION_MEAN,
    SHARED_NAT_SHARE,
    START,
    TOKENS_PER_SECOND,
    VERIFIED_SHARE,
)
from gateway.simulation.scenarios import SCENARIOS, Scenario
from gateway.simulation.shapes import Layout, campaign_layout, customer_layout, org_volume, stacked

_Z = (0.0, 1.2816, 2.3263)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


BACKGROUND, CUSTOMER, CAMPAIGN = 0, 1, 2  # Accounts.group


@dataclass(frozen=True, slots=True)
class Accounts:
    """One row per account: the background's first, then customers', then the campaign's."""

    organization: IntArray  # organization index
    instrument: IntArray  # payment card index
    device: IntArray  # device id index
    nat: IntArray  # office NAT index; -1: a fresh residential-proxy address per request
    group: npt.NDArray[np.int8]  # BACKGROUND, CUSTOMER or CAMPAIGN
    verified: npt.NDArray[np.bool_]  # the organization passed verification (background only)

    @property
    def campaign(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.group == CAMPAIGN)

    def of(self, group: int) -> npt.NDArray[np.bool_]:
        return np.asarray(self.group == group)


@dataclass(frozen=True, slots=True)
class Events:
    """One row per exchange, sorted by time."""

    time: FloatArray
    duration: FloatArray
    account: IntArray
    input_tokens: IntArray
    output_tokens: IntArray  # what the upstream would generate if admitted
    max_tokens: IntArray
    proxy_address: IntArray  # campaign: a unique per-request counter; legit: -1

    def __len__(self) -> int:
        return len(self.time)


@dataclass(frozen=True, slots=True)
class Population:
    accounts: Accounts
    events: Events
    org_volume: FloatArray  # background organizations' expected requests per day
    days: int
    start: float = START

    def counts(self) -> dict[str, int]:
        """Organizations and accounts of each group."""
        found = {}
        for name, group in (("legit", BACKGROUND), ("customer", CUSTOMER), ("campaign", CAMPAIGN)):
            rows = self.accounts.of(group)
            found[f"{name}_organizations"] = len(np.unique(self.accounts.organization[rows]))
            found[f"{name}_accounts"] = int(rows.sum())
        return found

    def without_campaign(self) -> Population:
        """The same accounts, the campaign's events left out."""
        keep = ~self.accounts.campaign[self.events.account]
        events = Events(*(getattr(self.events, f)[keep] for f in Events.__slots__))
        return replace(self, events=events)


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


def _rhythm(days: int) -> FloatArray:
    """Relative arrival weight of each hour: busiest mid-afternoon UTC, weekends at half."""
    hours = np.arange(days * 24)
    hour_of_day = hours % 24
    weekday = (hours // 24 + 2) % 7  # 22 April 2026 is a Wednesday (Monday = 0)
    weight = 1.0 + 0.8 * np.cos(2 * math.pi * (hour_of_day - 15) / 24)
    weight = weight * np.where(weekday >= 5, 0.5, 1.0)
    return np.asarray(weight / weight.sum(), dtype=np.float64)


def _legit_accounts(rng: np.random.Generator, orgs: int) -> tuple[IntArray, IntArray, FloatArray]:
    """Per account its organization and NAT; per organization its daily volume."""
    volume = org_volume(rng, orgs)
    sizes = 1 + rng.poisson(2.0, orgs)
    organization = np.repeat(np.arange(orgs), sizes)
    # Each organization has its own NAT; a share of them sit behind one shared with 2-4
    # other organizations (an office building, a coworking space, a parent company).
    nat_of_org = np.arange(orgs)
    shared = np.flatnonzero(rng.random(orgs) < SHARED_NAT_SHARE)
    rng.shuffle(shared)
    start = 0
    while start < len(shared):
        group = shared[start : start + int(rng.integers(3, 6))]
        nat_of_org[group] = group[0]
        start += len(group)
    return organization, nat_of_org[organization], volume


def _legit_events(
    rng: np.random.Generator, organization: IntArray, volume: FloatArray, days: int
) -> tuple[FloatArray, IntArray]:
    """Bursty arrivals: sessions start with the daily rhythm, each a few requests long."""
    orgs = len(volume)
    sessions = rng.poisson(volume * days / SESSION_MEAN)
    session_org = np.repeat(np.arange(orgs), sessions)
    hour = rng.choice(days * 24, size=len(session_org), p=_rhythm(days))
    session_start = (hour + rng.random(len(session_org))) * 3600.0
    length = rng.geometric(1.0 / SESSION_MEAN, len(session_org))
    # Each session belongs to one account of its organization.
    first = np.searchsorted(organization, np.arange(orgs))
    count = np.bincount(organization, minlength=orgs)
    session_account = first[session_org] + (rng.random(len(session_org)) * count[session_org])
    session_account = session_account.astype(np.int64)
    owner = np.repeat(np.arange(len(session_org)), length)
    gaps = rng.exponential(SESSION_GAP, len(owner))
    # Offsets within a session: cumulative gaps since the session's first request (at 0).
    cumulative = np.cumsum(gaps)
    starts = np.cumsum(length) - length
    offset = cumulative - cumulative[starts][owner]
    times = session_start[owner] + offset
    keep = times < days * DAY
    return times[keep], session_account[owner][keep]


def build(
    seed: int,
    *,
    scenario: Scenario = SCENARIOS["tuned"],
    scale: float = 1.0,
    days: int = DAYS,
    legit_orgs: int | None = None,
    campaign_accounts: int | None = None,
    verified_share: float = VERIFIED_SHARE,
) -> Population:
    """The background, and the scenario's campaign or customers.

    ``scale`` multiplies the number of background organizations and of campaign accounts
    (at least one each); rates per account and organization, token shapes, the number of
    days and customer shapes stay as they are. Each group draws from its own generator
    (the seed with 0, 1 or 2), so a seed's background is the same in every scenario.
    """
    orgs = legit_orgs if legit_orgs is not None else max(1, round(LEGIT_ORGS * scale))
    background, volume, verified, part = _background(
        np.random.default_rng([seed, BACKGROUND]), orgs, days, verified_share
    )
    layouts, parts, groups = [background], [part], [BACKGROUND]
    if scenario.customer is not None:
        rng = np.random.default_rng([seed, CUSTOMER])
        customers, customer_volume = customer_layout(rng, scenario.customer)
        times, account = _legit_events(rng, customers.organization, customer_volume, days)
        layouts.append(customers)
        parts.append(_legit_part(rng, times, account))
        groups.append(CUSTOMER)
    if scenario.campaign is not None:
        count = campaign_accounts
        if count is None:
            count = max(1, round(CAMPAIGN_ACCOUNTS * scale))
        campaign, rate = campaign_layout(scenario.campaign, count)
        layouts.append(campaign)
        parts.append(_campaign_part(np.random.default_rng([seed, CAMPAIGN]), rate, campaign, days))
        groups.append(CAMPAIGN)

    layout = stacked(layouts)
    sizes = [len(x) for x in layouts]
    accounts = Accounts(
        organization=layout.organization,
        instrument=layout.instrument,
        device=layout.device,
        nat=layout.nat,
        group=np.repeat(np.array(groups, np.int8), sizes),
        verified=np.concatenate([verified, np.zeros(len(layout) - len(verified), bool)]),
    )
    # Each part numbers its accounts from 0; move them past the groups before it.
    first = np.cumsum([0, *sizes[:-1]])
    parts = [
        replace(part, account=part.account + offset)
        for part, offset in zip(parts, first.tolist(), strict=True)
    ]
    return Population(accounts=accounts, events=_events(parts), org_volume=volume, days=days)


@dataclass(frozen=True, slots=True)
class _Part:
    """One group's events, unsorted."""

    time: FloatArray
    account: IntArray
    input_tokens: IntArray
    output_tokens: IntArray
    max_tokens: IntArray
    proxy_address: IntArray  # a unique counter per campaign request; -1 for others


def _background(
    rng: np.random.Generator, orgs: int, days: int, verified_share: float
) -> tuple[Layout, FloatArray, npt.NDArray[np.bool_], _Part]:
    organization, nat, volume = _legit_accounts(rng, orgs)
    # Verification follows size: the busiest organizations are the businesses that
    # signed contracts or passed business verification. An assumption; see the doc.
    cutoff = np.quantile(volume, 1.0 - verified_share) if verified_share > 0 else np.inf
    verified = volume[organization] >= cutoff
    times, account = _legit_events(rng, organization, volume, days)
    layout = Layout(organization, organization, np.arange(len(organization)), nat)
    return layout, volume, verified, _legit_part(rng, times, account)


def _legit_part(rng: np.random.Generator, times: FloatArray, account: IntArray) -> _Part:
    """Legitimate requests: four in five conversations, one in five reasoning."""
    n = len(times)
    reasoning = rng.random(n) < REASONING_SHARE
    output = np.where(
        reasoning,
        quantile_sampler(rng, REASONING_OUTPUT, n, MAX_TOKENS_LONG),
        quantile_sampler(rng, CHAT_OUTPUT, n, MAX_TOKENS_CHAT),
    )
    return _Part(
        time=times,
        account=account,
        input_tokens=quantile_sampler(rng, CHAT_INPUT, n, 200_000),
        output_tokens=output,
        max_tokens=np.where(reasoning, MAX_TOKENS_LONG, MAX_TOKENS_CHAT),
        proxy_address=np.full(n, -1),
    )


def _campaign_part(rng: np.random.Generator, rate: float, layout: Layout, days: int) -> _Part:
    """Poisson arrivals around the clock; conversation prompts, reasoning-sized answers."""
    per_account = rng.poisson(rate * days, len(layout))
    account = np.repeat(np.arange(len(layout)), per_account)
    n = len(account)
    return _Part(
        time=rng.random(n) * days * DAY,
        account=account,
        input_tokens=quantile_sampler(rng, CHAT_INPUT, n, 200_000),
        output_tokens=quantile_sampler(rng, REASONING_OUTPUT, n, MAX_TOKENS_LONG),
        max_tokens=np.full(n, MAX_TOKENS_LONG),
        proxy_address=np.arange(n),
    )


def _events(parts: list[_Part]) -> Events:
    time = np.concatenate([p.time for p in parts])
    order = np.argsort(time, kind="stable")

    def joined(name: str) -> IntArray:
        values: IntArray = np.concatenate([getattr(p, name) for p in parts])[order]
        return values

    output = joined("output_tokens")
    return Events(
        time=START + time[order],
        duration=0.5 + output / TOKENS_PER_SECOND,
        account=joined("account"),
        input_tokens=joined("input_tokens"),
        output_tokens=output,
        max_tokens=joined("max_tokens"),
        proxy_address=joined("proxy_address"),
    )
