"""Each named scenario generates the population its one-line description promises."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from gateway.simulation.population import CAMPAIGN, CUSTOMER, Population, build
from gateway.simulation.scenarios import SCENARIOS, CustomerShape

Ints = npt.NDArray[np.int64]


def tiny(name: str, seed: int = 0, **options: int) -> Population:
    return build(seed, scenario=SCENARIOS[name], legit_orgs=5, days=1, **options)


def holders(values: Ints) -> Ints:
    """How many accounts hold each distinct value."""
    counts: Ints = np.unique(values, return_counts=True)[1]
    return counts


def linked_groups(population: Population, rows: npt.NDArray[np.bool_]) -> list[int]:
    """Sizes of the groups of accounts linked through a shared card or device."""
    accounts = population.accounts
    parent = {int(i): int(i) for i in np.flatnonzero(rows)}

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for values in (accounts.instrument, accounts.device):
        first: dict[int, int] = {}
        for i in parent:
            j = first.setdefault(int(values[i]), i)
            parent[root(i)] = root(j)
    return sorted(np.unique([root(i) for i in parent], return_counts=True)[1].tolist())


def test_tuned_puts_10_accounts_on_a_card_each_its_own_organization() -> None:
    accounts = tiny("tuned", campaign_accounts=100).accounts
    campaign = accounts.campaign
    assert set(holders(accounts.instrument[campaign]).tolist()) == {10}
    assert set(holders(accounts.organization[campaign]).tolist()) == {1}
    assert set(holders(accounts.device[campaign]).tolist()) == {1}


def test_pairs_puts_2_accounts_on_a_card_each_its_own_organization() -> None:
    population = tiny("pairs", campaign_accounts=100)
    accounts = population.accounts
    campaign = accounts.campaign
    assert campaign.sum() == 100
    assert set(holders(accounts.instrument[campaign]).tolist()) == {2}
    assert set(holders(accounts.organization[campaign]).tolist()) == {1}
    assert linked_groups(population, campaign) == [2] * 50


def test_one_org_rings_are_50_accounts_of_one_organization_on_one_card() -> None:
    population = tiny("one-org-rings", campaign_accounts=200)
    accounts = population.accounts
    campaign = accounts.campaign
    assert set(holders(accounts.organization[campaign]).tolist()) == {50}
    assert set(holders(accounts.instrument[campaign]).tolist()) == {50}
    pairs = set(zip(accounts.organization[campaign], accounts.instrument[campaign], strict=True))
    assert len(pairs) == 4  # each ring's organization pays with its own card


def test_unlinkable_30_sends_30_percent_of_the_volume_through_accounts_sharing_nothing() -> None:
    population = tiny("unlinkable-30", campaign_accounts=1000)
    accounts, events = population.accounts, population.events
    campaign = accounts.campaign
    shares_card = holders(accounts.instrument)[
        np.unique(accounts.instrument, return_inverse=True)[1]
    ]
    shares_device = holders(accounts.device)[np.unique(accounts.device, return_inverse=True)[1]]
    alone = campaign & (shares_card == 1) & (shares_device == 1)
    assert alone.sum() == 300
    sent = alone[events.account].sum() / campaign[events.account].sum()
    assert sent == pytest.approx(0.3, abs=0.02)
    assert linked_groups(population, campaign & ~alone) == [10] * 70


def test_wide_slow_spreads_the_tuned_volume_over_5x_the_accounts() -> None:
    tuned = tiny("tuned", campaign_accounts=200)
    wide = tiny("wide-slow", campaign_accounts=200)
    assert wide.accounts.campaign.sum() == 5 * tuned.accounts.campaign.sum() == 1000
    volume = [p.accounts.campaign[p.events.account].sum() for p in (tuned, wide)]
    assert volume[1] == pytest.approx(volume[0], rel=0.03)
    assert set(holders(wide.accounts.instrument[wide.accounts.campaign]).tolist()) == {10}


def test_chains_share_no_value_among_more_than_2_accounts_yet_link_10() -> None:
    population = tiny("chains", campaign_accounts=100)
    accounts = population.accounts
    campaign = accounts.campaign
    for values in (accounts.instrument[campaign], accounts.device[campaign]):
        assert holders(values).max() == 2  # no background account holds them (test below)
    assert set(holders(accounts.organization[campaign]).tolist()) == {1}
    assert linked_groups(population, campaign) == [10] * 10


def test_the_enterprise_is_one_organization_of_2000_accounts_on_one_card() -> None:
    for scale in (1.0, 0.0004):  # a customer shape keeps its size whatever the scale
        population = build(1, scenario=SCENARIOS["enterprise"], scale=scale, days=1)
        accounts = population.accounts
        customer = accounts.of(CUSTOMER)
        assert customer.sum() == 2000
        assert len(np.unique(accounts.organization[customer])) == 1
        assert len(np.unique(accounts.instrument[customer])) == 1
        assert not accounts.campaign.any()
    # Scaled down explicitly, as the end-to-end tests do.
    smaller = replace(SCENARIOS["enterprise"], customer=CustomerShape("enterprise", accounts=200))
    accounts = build(1, scenario=smaller, legit_orgs=5, days=1).accounts
    assert accounts.of(CUSTOMER).sum() == 200


def test_an_agency_pays_for_5_to_30_client_organizations_with_one_card() -> None:
    accounts = tiny("agencies", seed=2).accounts
    customer = accounts.of(CUSTOMER)
    cards, organizations = accounts.instrument[customer], accounts.organization[customer]
    assert len(np.unique(cards)) == 5
    for card in np.unique(cards):
        clients = np.unique(organizations[cards == card])
        assert 5 <= len(clients) <= 30
    for organization in np.unique(organizations):
        assert len(np.unique(cards[organizations == organization])) == 1


def test_a_ci_farm_runs_10_organizations_on_2_devices() -> None:
    accounts = tiny("ci-farm").accounts
    customer = accounts.of(CUSTOMER)
    assert len(np.unique(accounts.organization[customer])) == 10
    assert len(np.unique(accounts.instrument[customer])) == 10  # each pays with its own card
    assert len(np.unique(accounts.device[customer])) == 2


def test_a_lab_is_40_students_on_4_devices() -> None:
    accounts = tiny("lab").accounts
    customer = accounts.of(CUSTOMER)
    assert customer.sum() == 40
    assert len(np.unique(accounts.organization[customer])) == 40
    assert len(np.unique(accounts.instrument[customer])) == 40
    assert len(np.unique(accounts.device[customer])) == 4


def test_customers_and_campaign_share_nothing_with_the_background() -> None:
    for name in SCENARIOS:
        accounts = tiny(name, campaign_accounts=50).accounts
        background = accounts.group == 0
        for values in (accounts.organization, accounts.instrument, accounts.device):
            assert set(values[background].tolist()).isdisjoint(values[~background].tolist())


def test_a_seed_gives_the_same_background_in_every_scenario() -> None:
    def background(population: Population) -> tuple[list[float], list[int]]:
        events = population.events
        rows = population.accounts.group[events.account] == 0
        return events.time[rows].tolist(), events.output_tokens[rows].tolist()

    first = background(tiny("tuned", seed=3, campaign_accounts=50))
    for name in ("wide-slow", "chains", "enterprise", "lab"):
        assert background(tiny(name, seed=3, campaign_accounts=50)) == first
    assert background(tiny("tuned", seed=4, campaign_accounts=50)) != first


def test_customer_scenarios_run_no_campaign_and_campaign_scenarios_no_customers() -> None:
    for name, scenario in SCENARIOS.items():
        accounts = tiny(name, campaign_accounts=50).accounts
        assert accounts.of(CAMPAIGN).any() == (scenario.campaign is not None)
        assert accounts.of(CUSTOMER).any() == (scenario.customer is not None)
