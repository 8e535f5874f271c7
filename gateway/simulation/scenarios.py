"""Named scenarios for ``gateway simulate``: campaign variants and customer shapes.

A **campaign variant** changes one habit of the campaign the shipped policy was tuned on
(10 accounts per card, each its own organization); the run measures the share of its output
that got through. A **customer shape** adds legitimate customers that look like a ring to the
background population (no campaign runs with it); the run measures what cluster rules take
from them beyond their own limits. Without numpy, so ``--help`` stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from gateway.simulation.campaign import (
    AGENCIES,
    CHAIN,
    ENTERPRISE_ACCOUNTS,
    RING,
    UNLINKABLE_SHARE,
    WIDEN,
)

CustomerKind = Literal["agencies", "ci-farm", "lab", "enterprise"]


@dataclass(frozen=True, slots=True)
class CampaignShape:
    """How the campaign's accounts are laid out; every account sends at the same rate."""

    per_card: int | None = 10  # accounts per payment card; None: all on one card
    per_org: int = 1  # accounts per organization (consecutive accounts, so on one card)
    unlinkable: float = 0.0  # share of accounts with their own card, device and organization
    widen: int = 1  # the accounts multiplied by this, each this much slower
    chain: int = 0  # >0: chains of this many, A-B share a card, B-C a device, C-D a card...


@dataclass(frozen=True, slots=True)
class CustomerShape:
    """Legitimate customers added whole to the background, whatever ``--scale``: their size
    is what makes them look like a ring (as a ring's size does not scale either)."""

    kind: CustomerKind
    units: int = 1  # agencies, farms, labs or enterprises
    accounts: int = ENTERPRISE_ACCOUNTS  # enterprise only: accounts of its one organization


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str  # one line for --help and the docs
    campaign: CampaignShape | None = None
    customer: CustomerShape | None = None

    @property
    def kind(self) -> str:
        return "campaign" if self.campaign is not None else "customer"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("tuned", "10 accounts per card, one organization each", CampaignShape()),
        Scenario("pairs", "2 accounts per card, one organization each", CampaignShape(2)),
        Scenario(
            "one-org-rings",
            f"rings of {RING} accounts, each ring one organization on one card",
            CampaignShape(per_card=RING, per_org=RING),
        ),
        Scenario(
            "unlinkable-30",
            f"{UNLINKABLE_SHARE:.0%} of the accounts (and volume) share no card or device; "
            "the rest as tuned",
            CampaignShape(unlinkable=UNLINKABLE_SHARE),
        ),
        Scenario(
            "wide-slow",
            f"the tuned volume over {WIDEN}x the accounts, each {WIDEN}x slower, 10 per card",
            CampaignShape(widen=WIDEN),
        ),
        Scenario(
            "chains",
            f"chains of {CHAIN}: A-B share a card, B-C a device, C-D a card...; "
            "no value held by more than 2",
            CampaignShape(per_card=None, chain=CHAIN),
        ),
        Scenario(
            "agencies",
            f"{AGENCIES} agencies, each paying with one card for 5-30 client organizations",
            customer=CustomerShape("agencies", units=AGENCIES),
        ),
        Scenario(
            "ci-farm",
            "10 organizations whose accounts all run on 2 shared runner device ids",
            customer=CustomerShape("ci-farm"),
        ),
        Scenario(
            "lab",
            "40 students, each their own organization and card, on 4 shared device ids",
            customer=CustomerShape("lab"),
        ),
        Scenario(
            "enterprise",
            f"1 organization, {ENTERPRISE_ACCOUNTS:,} accounts on one card",
            customer=CustomerShape("enterprise"),
        ),
    )
}

# The scenarios whose linked accounts are grouped by card, so --accounts-per-instrument
# can change the group: the tuned campaign, and the linked part of two of its variants.
CARD_GROUPED = ("tuned", "unlinkable-30", "wide-slow")


def with_accounts_per_card(scenario: Scenario, per_card: int | None) -> Scenario:
    """The scenario with ``per_card`` campaign accounts per card where it groups by card."""
    if scenario.campaign is None or scenario.name not in CARD_GROUPED:
        return scenario
    return replace(scenario, campaign=replace(scenario.campaign, per_card=per_card))


def scenario_help() -> str:
    width = max(len(name) for name in SCENARIOS)
    lines = ["scenarios (--scenario NAME, several, or all):"]
    lines += [f"  {s.name:<{width}}  {s.kind:<8}  {s.summary}" for s in SCENARIOS.values()]
    return "\n".join(lines)
