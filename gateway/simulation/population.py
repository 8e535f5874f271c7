"""Synthetic traffic: legitimate organizations and a distillation campaign, as numpy arrays.

Everything is drawn from one ``numpy.random.Generator`` seeded by the caller, so a seed
gives the same events. Shapes come from /work/shared/design-notes.md (public traces):

- **Legitimate**: ``orgs`` organizations, each with a lognormal daily volume (sigma 2, so
  the top tenth send about three quarters), 1 + Poisson(2) accounts paying with the
  organization's card, an office NAT or two (some NATs shared by several organizations),
  arrivals in sessions (bursts) whose starts follow a daily and weekly rhythm; the busiest
  ``verified_share`` of organizations carry ``verified=true`` (an edge attribute). Four in
  five requests are conversations (input p50/p90/p99 1,020/2,730/4,140, output 129/424/601,
  max_tokens 1,024), one in five asks for reasoning (output 810/4,170/13,530).
- **Campaign**: ``campaign_accounts`` accounts, each its own organization, Poisson arrivals
  at 25.6 a day around the clock, conversation-sized prompts and reasoning-sized answers
  (a distiller wants long answers, and the reasoning trace is the longest public shape),
  max_tokens 16,384. Accounts share payment instruments in groups of
  ``accounts_per_instrument``; each request comes through a residential proxy from its own
  IPv6 /56, so no two requests share an address prefix and addresses link nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.simulation.campaign import (
    CAMPAIGN_ACCOUNTS,
    CAMPAIGN_RATE,
    CHAT_INPUT,
    CHAT_OUTPUT,
    DAY,
    DAYS,
    LEGIT_MEAN_RATE,
    LEGIT_ORGS,
    MAX_TOKENS_CHAT,
    MAX_TOKENS_LONG,
    REASONING_OUTPUT,
    REASONING_SHARE,
    SESSION_GAP,
    SESSION_MEAN,
    SHARED_NAT_SHARE,
    SIGMA,
    START,
    TOKENS_PER_SECOND,
    VERIFIED_SHARE,
)

_Z = (0.0, 1.2816, 2.3263)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Accounts:
    """One row per account: legitimate ones first, then the campaign's."""

    organization: IntArray  # organization index (campaign organizations follow legit ones)
    instrument: IntArray  # payment instrument index
    nat: IntArray  # legit: office NAT index; campaign: -1 (a fresh proxy address per request)
    campaign: npt.NDArray[np.bool_]
    verified: npt.NDArray[np.bool_]  # the organization passed verification (never the campaign)


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
    org_volume: FloatArray  # legit organizations' expected requests per day
    days: int
    start: float = START


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
    mu = math.log(LEGIT_MEAN_RATE) - SIGMA**2 / 2  # mean LEGIT_MEAN_RATE a day
    volume = rng.lognormal(mu, SIGMA, orgs)
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
    scale: float = 1.0,
    days: int = DAYS,
    accounts_per_instrument: int | None = 1,
    legit_orgs: int | None = None,
    campaign_accounts: int | None = None,
    verified_share: float = VERIFIED_SHARE,
) -> Population:
    """A population; ``accounts_per_instrument`` None puts every campaign account on one card.

    ``scale`` multiplies the number of legitimate organizations and of campaign accounts
    (at least one each); rates per account and organization, token shapes and the number
    of days stay as they are.
    """
    rng = np.random.default_rng(seed)
    orgs = legit_orgs if legit_orgs is not None else max(1, round(LEGIT_ORGS * scale))
    campaign = (
        campaign_accounts
        if campaign_accounts is not None
        else max(1, round(CAMPAIGN_ACCOUNTS * scale))
    )
    organization, nat, volume = _legit_accounts(rng, orgs)
    # Verification follows size: the busiest organizations are the businesses that
    # signed contracts or passed business verification. An assumption; see the doc.
    cutoff = np.quantile(volume, 1.0 - verified_share) if verified_share > 0 else np.inf
    verified = volume[organization] >= cutoff
    legit_times, legit_account = _legit_events(rng, organization, volume, days)
    n_legit = len(organization)

    group = campaign if accounts_per_instrument is None else accounts_per_instrument
    camp_index = np.arange(campaign)
    per_account = rng.poisson(CAMPAIGN_RATE * days, campaign)
    camp_account = np.repeat(camp_index, per_account) + n_legit
    camp_times = rng.random(len(camp_account)) * days * DAY

    accounts = Accounts(
        organization=np.concatenate([organization, orgs + camp_index]),
        instrument=np.concatenate([organization, orgs + camp_index // max(1, group)]),
        nat=np.concatenate([nat, np.full(campaign, -1)]),
        campaign=np.concatenate([np.zeros(n_legit, bool), np.ones(campaign, bool)]),
        verified=np.concatenate([verified, np.zeros(campaign, bool)]),
    )
    events = _events(rng, legit_times, legit_account, camp_times, camp_account)
    return Population(accounts=accounts, events=events, org_volume=volume, days=days)


def _events(
    rng: np.random.Generator,
    legit_times: FloatArray,
    legit_account: IntArray,
    camp_times: FloatArray,
    camp_account: IntArray,
) -> Events:
    n_legit, n_camp = len(legit_times), len(camp_times)
    reasoning = rng.random(n_legit) < REASONING_SHARE
    legit_out = np.where(
        reasoning,
        quantile_sampler(rng, REASONING_OUTPUT, n_legit, MAX_TOKENS_LONG),
        quantile_sampler(rng, CHAT_OUTPUT, n_legit, MAX_TOKENS_CHAT),
    )
    legit_max = np.where(reasoning, MAX_TOKENS_LONG, MAX_TOKENS_CHAT)
    camp_out = quantile_sampler(rng, REASONING_OUTPUT, n_camp, MAX_TOKENS_LONG)
    inputs = quantile_sampler(rng, CHAT_INPUT, n_legit + n_camp, 200_000)
    output = np.concatenate([legit_out, camp_out])
    time = np.concatenate([legit_times, camp_times])
    order = np.argsort(time, kind="stable")
    proxy = np.concatenate([np.full(n_legit, -1), np.arange(n_camp)])
    return Events(
        time=START + time[order],
        duration=(0.5 + output / TOKENS_PER_SECOND)[order],
        account=np.concatenate([legit_account, camp_account])[order],
        input_tokens=inputs[order],
        output_tokens=output[order],
        max_tokens=np.concatenate([legit_max, np.full(n_camp, MAX_TOKENS_LONG)])[order],
        proxy_address=proxy[order],
    )
