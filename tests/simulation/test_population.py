"""The synthetic population has the shapes docs/distillation.md promises."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gateway.policy.loader import load_policy_set
from gateway.policy.model import LinkSignal
from gateway.simulation.campaign import CHAT_INPUT, REASONING_OUTPUT
from gateway.simulation.population import build, quantile_sampler
from gateway.simulation.run import exchanges
from gateway.simulation.scenarios import SCENARIOS, with_accounts_per_card


def test_the_top_tenth_of_organizations_sends_most_legitimate_requests() -> None:
    population = build(1, legit_orgs=2000, campaign_accounts=1, days=7)
    events, accounts = population.events, population.accounts
    legit = ~accounts.campaign[events.account]
    per_org = np.bincount(accounts.organization[events.account[legit]], minlength=2000)
    top = np.sort(per_org)[::-1][:200].sum() / per_org.sum()
    assert 0.60 <= top <= 0.85


def test_campaign_accounts_send_about_25_6_exchanges_a_day_around_the_clock() -> None:
    population = build(2, legit_orgs=1, campaign_accounts=300, days=10)
    events, accounts = population.events, population.accounts
    campaign = accounts.campaign[events.account]
    rate = campaign.sum() / 300 / 10
    assert rate == pytest.approx(25.6, rel=0.02)
    hours = ((events.time[campaign] - population.start) // 3600 % 24).astype(int)
    per_hour = np.bincount(hours, minlength=24)
    assert per_hour.min() > 0.8 * per_hour.mean()  # no daily rhythm


@pytest.mark.parametrize("per_instrument", [1, 10, 100, None])
def test_accounts_per_instrument_is_honored(per_instrument: int | None) -> None:
    scenario = with_accounts_per_card(SCENARIOS["tuned"], per_instrument)
    population = build(3, legit_orgs=5, campaign_accounts=250, days=1, scenario=scenario)
    accounts = population.accounts
    sizes = np.unique(accounts.instrument[accounts.campaign], return_counts=True)[1]
    group = 250 if per_instrument is None else per_instrument
    assert sizes.max() == group
    assert (sizes == group).sum() == 250 // group
    legit_cards = set(accounts.instrument[~accounts.campaign].tolist())
    assert legit_cards.isdisjoint(accounts.instrument[accounts.campaign].tolist())


def test_proxy_addresses_link_nothing() -> None:
    population = build(4, legit_orgs=20, campaign_accounts=50, days=3)
    shipped = load_policy_set("policies/distillation-defense.yaml")
    # The shipped file no longer links by address (for this reason); a set that does.
    address = LinkSignal(ipv4_prefix=24, ipv6_prefix=56, max_accounts=200)
    policies = replace(shipped, clusters=replace(shipped.clusters, link_by=(address,)))
    campaign_ips, legit_ips = [], set()
    for exchange in exchanges(population, policies):
        ips = [value for name, value in exchange.signals if name.startswith("client_ip")]
        assert len(ips) == 1
        if exchange.subject.account.startswith("camp-"):
            campaign_ips.append(ips[0])
        else:
            legit_ips.add(ips[0])
    assert len(set(campaign_ips)) == len(campaign_ips) > 1000
    assert legit_ips.isdisjoint(campaign_ips)


@pytest.mark.parametrize("quantiles", [CHAT_INPUT, REASONING_OUTPUT])
def test_token_lengths_match_the_public_percentiles(
    quantiles: tuple[float, float, float],
) -> None:
    drawn = quantile_sampler(np.random.default_rng(5), quantiles, 200_000, 1e9)
    found = np.percentile(drawn, [50, 90, 99])
    assert found == pytest.approx(quantiles, rel=0.03)


def test_a_seed_gives_the_same_population() -> None:
    first, second = (build(6, scale=0.0004, days=2) for _ in range(2))
    assert np.array_equal(first.events.time, second.events.time)
    assert np.array_equal(first.events.output_tokens, second.events.output_tokens)
