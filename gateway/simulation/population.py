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

Here are the accounts and what each group's traffic is drawn from; the events themselves
are drawn a day at a time (traffic.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from gateway.simulation.campaign import (
    CAMPAIGN_ACCOUNTS,
    DAYS,
    LEGIT_ORGS,
    SHARED_NAT_SHARE,
    START,
    VERIFIED_SHARE,
)
from gateway.simulation.scenarios import SCENARIOS, Scenario
from gateway.simulation.shapes import Layout, campaign_layout, customer_layout, org_volume, stacked
from gateway.simulation.traffic import (
    Campaign,
    Days,
    Events,
    Legit,
    Source,
    quantile_sampler,
)

__all__ = ["BACKGROUND", "CAMPAIGN", "CUSTOMER", "Accounts", "Events", "Population", "build"]
__all__ += ["quantile_sampler"]

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

    def __len__(self) -> int:
        return len(self.group)


@dataclass(frozen=True, slots=True)
class Population:
    accounts: Accounts
    sources: tuple[Source, ...]  # what each group's events are drawn from
    org_volume: FloatArray  # background organizations' expected requests per day
    days: int
    seed: int
    start: float = START

    def each_day(self) -> Iterator[Events]:
        """The events, one day at a time, in time order."""
        return iter(Days(self.seed, self.sources, self.days, self.start))

    @property
    def events(self) -> Events:
        """Every day's events at once: for small populations (tests)."""
        return Events.joined(list(self.each_day()))

    def expected_events(self) -> float:
        """About how many exchanges the days hold (for progress and planning)."""
        total = 0.0
        for source in self.sources:
            if isinstance(source, Campaign):
                total += source.rate * source.accounts
            else:
                total += float(source.volume.sum())
        return total * self.days

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
        kept = tuple(s for s in self.sources if not isinstance(s, Campaign))
        return replace(self, sources=kept)


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
    rng = np.random.default_rng([seed, BACKGROUND])
    organization, nat, volume = _legit_accounts(rng, orgs)
    # Verification follows size: the busiest organizations are the businesses that
    # signed contracts or passed business verification. An assumption; see the doc.
    cutoff = np.quantile(volume, 1.0 - verified_share) if verified_share > 0 else np.inf
    verified = volume[organization] >= cutoff
    layouts = [Layout(organization, organization, np.arange(len(organization)), nat)]
    groups = [BACKGROUND]
    sources: list[Source] = [Legit(BACKGROUND, organization, volume, 0)]
    first = len(organization)
    if scenario.customer is not None:
        customers, customer_volume = customer_layout(
            np.random.default_rng([seed, CUSTOMER]), scenario.customer
        )
        layouts.append(customers)
        groups.append(CUSTOMER)
        sources.append(Legit(CUSTOMER, customers.organization, customer_volume, first))
        first += len(customers)
    if scenario.campaign is not None:
        count = campaign_accounts
        if count is None:
            count = max(1, round(CAMPAIGN_ACCOUNTS * scale))
        campaign, rate = campaign_layout(scenario.campaign, count)
        layouts.append(campaign)
        groups.append(CAMPAIGN)
        sources.append(Campaign(CAMPAIGN, len(campaign), rate, first))

    layout = stacked(layouts)
    accounts = Accounts(
        organization=layout.organization,
        instrument=layout.instrument,
        device=layout.device,
        nat=layout.nat,
        group=np.repeat(np.array(groups, np.int8), [len(x) for x in layouts]),
        verified=np.concatenate([verified, np.zeros(len(layout) - len(verified), bool)]),
    )
    return Population(accounts, tuple(sources), volume, days, seed)
