"""Split a population into parts that share no budget, to replay them in separate workers.

Accounts can only ever share a counter through something they have in common: an
organization, a card, a device, an office address (as the policies' address prefixes
group them), or a link the policy file makes. Accounts joined by any of these,
transitively, form a component; nothing can make two components meet (a residential-proxy
address is never shared), so replaying components apart decides what one replay of them
all decides. Components are dealt to parts
by expected traffic, the largest first, each to the lightest part so far.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from gateway.policy.model import PolicySet
from gateway.simulation.population import Population
from gateway.simulation.traffic import Campaign

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def components(population: Population, policies: PolicySet) -> IntArray:
    """Per account, the smallest account index of its component."""
    accounts = population.accounts
    label = np.arange(len(accounts), dtype=np.int64)
    columns = [accounts.organization, accounts.instrument, accounts.device]
    columns += _address_columns(population, policies)
    named = _linked_rows(population, policies.clusters.links)
    while True:
        before = label
        for values in columns:
            smallest = np.full(int(values.max(initial=0)) + 1, len(label), np.int64)
            np.minimum.at(smallest, values, label)
            label = np.minimum(label, smallest[values])
        for rows in named:
            label[rows] = label[rows].min()
        label = label[label]  # a label is an account whose own label may be smaller yet
        if np.array_equal(label, before):
            return label


def _address_columns(population: Population, policies: PolicySet) -> list[IntArray]:
    """Per address signal, each account's office address value as a number (a fresh one
    for an account without an office: its proxy addresses are never shared)."""
    from gateway.simulation.run import Signals, nat_address

    nat = population.accounts.nat
    alone = np.arange(len(nat))
    offices = np.unique(nat[nat >= 0]).tolist()
    values = [Signals(policies).for_address(nat_address(n)) for n in offices]
    columns = []
    for k in range(len(values[0]) if values else 0):
        ids: dict[str, int] = {}
        number = {
            n: ids.setdefault(found[k][1], len(ids))
            for n, found in zip(offices, values, strict=True)
        }
        column = np.array([number.get(n, -1) for n in nat.tolist()], np.int64)
        columns.append(np.where(column >= 0, column, len(ids) + alone))
    return columns


def _linked_rows(population: Population, links: Mapping[str, tuple[str, ...]]) -> list[IntArray]:
    """Rows of the accounts each ``clusters.links`` entry names (acct-N, cust-N, camp-N)."""
    from gateway.simulation.run import PREFIXES

    groups = population.accounts.group
    found = []
    for names in links.values():
        rows = []
        for name in names:
            prefix, _, number = name.partition("-")
            if number.isdigit() and int(number) < len(groups):
                row = int(number)
                if PREFIXES.get(int(groups[row])) == prefix:
                    rows.append(row)
        if len(rows) > 1:
            found.append(np.asarray(rows, np.int64))
    return found


def account_rates(population: Population) -> FloatArray:
    """Expected exchanges a day of each account."""
    rates = np.zeros(len(population.accounts))
    for source in population.sources:
        first = source.first_account
        if isinstance(source, Campaign):
            rates[first : first + source.accounts] = source.rate
        else:
            organization = source.organization
            size = np.bincount(organization, minlength=len(source.volume))
            rows = slice(first, first + len(organization))
            rates[rows] = source.volume[organization] / size[organization]
    return rates


def parts(label: IntArray, weight: FloatArray, count: int) -> IntArray:
    """Per account, its part (0 to ``count`` - 1): whole components, balanced by weight."""
    roots, inverse = np.unique(label, return_inverse=True)
    load = np.bincount(inverse, weights=weight, minlength=len(roots))
    part_of_root = np.zeros(len(roots), np.int64)
    totals = [0.0] * count
    for root in np.argsort(-load, kind="stable").tolist():
        lightest = min(range(count), key=totals.__getitem__)
        part_of_root[root] = lightest
        totals[lightest] += float(load[root])
    found: IntArray = part_of_root[inverse]
    return found
