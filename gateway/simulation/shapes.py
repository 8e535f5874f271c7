"""Who shares what: the accounts of a campaign variant or a customer shape, as numpy arrays.

A ``Layout`` numbers organizations, cards, devices and NATs from 0 within itself; the
population offsets each numbering so that no two layouts share a value. Organizations are
numbered in account order (an organization's accounts are consecutive), as the arrival
model needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.simulation.campaign import (
    AGENCY_CLIENTS,
    CAMPAIGN_RATE,
    CI_ORGS,
    CI_RUNNERS,
    ENTERPRISE_ACCOUNT_RATE,
    LAB_DEVICES,
    LAB_STUDENTS,
    LEGIT_MEAN_RATE,
    SIGMA,
)
from gateway.simulation.scenarios import CampaignShape, CustomerShape

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Layout:
    """One row per account."""

    organization: IntArray
    instrument: IntArray  # payment card
    device: IntArray
    nat: IntArray  # office address; -1: a fresh residential-proxy address per request

    def __len__(self) -> int:
        return len(self.organization)


def org_volume(rng: np.random.Generator, orgs: int) -> FloatArray:
    """Requests a day per organization: lognormal, sigma 2, mean ``LEGIT_MEAN_RATE``."""
    mu = math.log(LEGIT_MEAN_RATE) - SIGMA**2 / 2
    return rng.lognormal(mu, SIGMA, orgs)


def campaign_layout(shape: CampaignShape, accounts: int) -> tuple[Layout, float]:
    """The campaign's accounts (``accounts`` times ``shape.widen``) and each one's rate a day."""
    n = accounts * shape.widen
    loners = round(n * shape.unlinkable)
    linked = np.arange(n - loners)
    alone = np.arange(n - loners, n)
    if shape.chain > 0:
        # Position p in its chain: p and p+1 share a card when p is even, a device when odd.
        chain, position = linked // shape.chain, linked % shape.chain
        card = chain * shape.chain + position // 2
        device = chain * shape.chain + (position + 1) // 2
    else:
        card = linked // (shape.per_card or max(1, len(linked)))
        device = linked
    organization = linked // shape.per_org
    layout = Layout(
        organization=np.concatenate([organization, alone]),
        instrument=np.concatenate([card, alone]),
        device=np.concatenate([device, alone]),
        nat=np.full(n, -1, np.int64),
    )
    return layout, CAMPAIGN_RATE / shape.widen


def customer_layout(rng: np.random.Generator, shape: CustomerShape) -> tuple[Layout, FloatArray]:
    """The customers' accounts, and each organization's requests a day."""
    if shape.kind == "enterprise":
        organization = np.repeat(np.arange(shape.units), shape.accounts)
        volume = np.full(shape.units, shape.accounts * ENTERPRISE_ACCOUNT_RATE)
        accounts = np.arange(len(organization))
        return _layout(organization, organization, accounts, organization), volume
    if shape.kind == "agencies":
        low, high = AGENCY_CLIENTS
        clients = rng.integers(low, high + 1, shape.units)
        agency = np.repeat(np.arange(shape.units), clients)  # per client organization
        volume = org_volume(rng, len(agency))
        organization = np.repeat(np.arange(len(agency)), 1 + rng.poisson(2.0, len(agency)))
        accounts = np.arange(len(organization))
        return _layout(organization, agency[organization], accounts, organization), volume
    if shape.kind == "ci-farm":
        farm = np.repeat(np.arange(shape.units), CI_ORGS)  # per organization
        volume = org_volume(rng, len(farm))
        organization = np.repeat(np.arange(len(farm)), 1 + rng.poisson(2.0, len(farm)))
        runner = farm[organization] * CI_RUNNERS + rng.integers(0, CI_RUNNERS, len(organization))
        return _layout(organization, organization, runner, farm[organization]), volume
    lab = np.repeat(np.arange(shape.units), LAB_STUDENTS)  # per student: one org, one account
    volume = org_volume(rng, len(lab))
    student = np.arange(len(lab))
    device = lab * LAB_DEVICES + rng.integers(0, LAB_DEVICES, len(lab))
    return _layout(student, student, device, lab), volume


def _layout(organization: IntArray, card: IntArray, device: IntArray, nat: IntArray) -> Layout:
    return Layout(
        organization=np.asarray(organization, np.int64),
        instrument=np.asarray(card, np.int64),
        device=np.asarray(device, np.int64),
        nat=np.asarray(nat, np.int64),
    )


def stacked(layouts: list[Layout]) -> Layout:
    """The layouts one after the other, each numbering moved past the ones before it."""
    columns: dict[str, list[IntArray]] = {f: [] for f in ("organization", "instrument", "device")}
    columns["nat"] = []
    for layout in layouts:
        for name, parts in columns.items():
            values: IntArray = getattr(layout, name)
            offset = 1 + max((int(p.max()) for p in parts if len(p)), default=-1)
            parts.append(np.where(values >= 0, values + offset, values))
    return Layout(**{name: np.concatenate(parts) for name, parts in columns.items()})
