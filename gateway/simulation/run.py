"""Replay a synthetic population through the real engine and tally it by population.

Events go straight from the population's arrays into the replayer, one ``Exchange`` at
a time (no log file unless one is asked for), so the engine is the only real cost.
Accounts are named by group: ``acct-…`` the background, ``cust-…`` a scenario's
customers, ``camp-…`` the campaign.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from gateway.budget.buckets import costs
from gateway.budget.decision import Decision, Subject
from gateway.identity import hash_value, signal_value
from gateway.metering import RequestEstimate, Usage
from gateway.policy.model import PolicySet, Scope
from gateway.replay import Exchange, Replayer, exchange_from_line, open_replay
from gateway.simulation.campaign import DAY, START
from gateway.simulation.population import BACKGROUND, CAMPAIGN, CUSTOMER, Population

MODEL = "model-large"
PAYMENT_HEADER = "x-payment-fingerprint"
DEVICE_HEADER = "x-device-id"
_SCRAMBLE = 0x9E3779B97F4A7C15  # odd, so j → j * _SCRAMBLE mod 2^40 is a bijection


PREFIXES = {BACKGROUND: "acct", CUSTOMER: "cust", CAMPAIGN: "camp"}


def group_of(account: str) -> str:
    """``campaign``, ``customer`` or ``legit`` (the background), by the account's name."""
    if account.startswith("camp-"):
        return "campaign"
    return "customer" if account.startswith("cust-") else "legit"


def refusal_kind(decision: Decision, estimate: RequestEstimate) -> str:
    """``admitted``, ``own`` (an account or organization limit lacked room, whichever
    bound) or ``cluster`` (only cluster rules refused: every own limit had room)."""
    refusal = decision.refusal
    if decision.admitted or refusal is None:
        return "admitted"
    if refusal.scope is not Scope.CLUSTER:
        return "own"
    cost = costs(estimate)
    own_short = any(
        s.scope is not Scope.CLUSTER and s.remaining < cost[s.metric] for s in decision.statuses
    )
    return "own" if own_short else "cluster"


@dataclass(slots=True)
class Count:
    """One group's exchanges and what became of them."""

    requests: int = 0
    admitted: int = 0
    refused_own: int = 0
    refused_cluster: int = 0
    shadow_cluster: int = 0  # admitted, but a shadow cluster policy would have refused
    output_offered: int = 0
    output_admitted: int = 0

    @property
    def refused(self) -> int:
        return self.requests - self.admitted

    def as_json(self) -> dict[str, Any]:
        requests = max(1, self.requests)
        return {
            "requests": self.requests,
            "requests_admitted": self.admitted,
            "refused": self.refused,
            "refused_share": self.refused / requests,
            "refused_own_limits": self.refused_own,
            "refused_cluster_only": self.refused_cluster,
            "refused_own_share": self.refused_own / requests,
            "refused_cluster_share": self.refused_cluster / requests,
            "shadow_cluster_would_refuse": self.shadow_cluster,
            "output_tokens_offered": self.output_offered,
            "output_tokens_admitted": self.output_admitted,
            "output_tokens_admitted_share": self.output_admitted / max(1, self.output_offered),
        }


@dataclass(slots=True)
class SimTally:
    """Per group (``legit``: the background, ``customer``, ``campaign``) what was admitted,
    and tokens per day for the plot."""

    days: int
    start: float = START
    groups: dict[str, Count] = field(default_factory=dict)
    per_day: dict[str, np.ndarray[Any, np.dtype[np.int64]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for group in ("legit", "customer", "campaign"):
            self.groups[group] = Count()
            for what in ("offered", "admitted"):
                self.per_day[f"{group}_{what}"] = np.zeros(self.days, np.int64)

    @property
    def campaign(self) -> Count:
        return self.groups["campaign"]

    @property
    def legit(self) -> Count:
        return self.groups["legit"]

    @property
    def customer(self) -> Count:
        return self.groups["customer"]

    def add(self, exchange: Exchange, decision: Decision) -> None:
        day = min(self.days - 1, max(0, int((exchange.time - self.start) // DAY)))
        tokens = exchange.usage.tokens if exchange.usage is not None else 0
        output = exchange.usage.output_tokens if exchange.usage is not None else 0
        group = group_of(exchange.subject.account)
        count = self.groups[group]
        count.requests += 1
        count.output_offered += output
        self.per_day[f"{group}_offered"][day] += tokens
        kind = refusal_kind(decision, exchange.estimate)
        if kind == "admitted":
            count.admitted += 1
            count.output_admitted += output
            self.per_day[f"{group}_admitted"][day] += tokens
            if any(r.scope is Scope.CLUSTER for r in decision.shadow_refusals):
                count.shadow_cluster += 1
        elif kind == "own":
            count.refused_own += 1
        else:
            count.refused_cluster += 1

    def as_json(self) -> dict[str, Any]:
        return {group: count.as_json() for group, count in self.groups.items()}


class Signals:
    """Hashed link signals, as ``gateway.identity`` computes them, each computed once."""

    def __init__(self, policies: PolicySet) -> None:
        link_by = policies.clusters.link_by
        self._headers = [s for s in link_by if s.header is not None]
        self._addresses = [s for s in link_by if s.header is None]

    def for_account(self, payment: str, device: str) -> tuple[tuple[str, str], ...]:
        values = {PAYMENT_HEADER: payment, DEVICE_HEADER: device}
        return tuple(
            (s.name, hash_value(s.name, value))
            for s in self._headers
            if (value := signal_value(s, values, "", True))
        )

    def for_address(self, address: str) -> tuple[tuple[str, str], ...]:
        return tuple(
            (s.name, hash_value(s.name, value))
            for s in self._addresses
            if (value := signal_value(s, {}, address, True))
        )

    def for_proxy(self, counter: int) -> tuple[tuple[str, str], ...]:
        """A residential-proxy request: its own IPv6 /56 (2a00::/16 and 40 scrambled bits
        of the counter), so its address prefix is shared with no other request. Written
        out directly: ``ipaddress`` per request would cost more than the engine."""
        bits = (counter * _SCRAMBLE) % (1 << 40)
        value = f"2a00:{bits >> 24:x}:{(bits >> 8) & 0xFFFF:x}:{(bits & 0xFF) << 8:x}::/56"
        return tuple((s.name, hash_value(s.name, value)) for s in self._addresses)


def nat_address(nat: int) -> str:
    return f"{20 + nat // 65536}.{(nat >> 8) & 255}.{nat & 255}.10"


def exchanges(population: Population, policies: PolicySet) -> Iterator[Exchange]:
    """The population's events as exchanges, in time order."""
    accounts, events = population.accounts, population.events
    signals = Signals(policies)
    subjects, account_signals = [], []
    plain, verified = {"model": MODEL}, {"model": MODEL, "verified": "true"}
    for i, (org, card, device, group, checked) in enumerate(
        zip(
            accounts.organization.tolist(),
            accounts.instrument.tolist(),
            accounts.device.tolist(),
            accounts.group.tolist(),
            accounts.verified.tolist(),
            strict=True,
        )
    ):
        prefix = PREFIXES[group]
        attributes = verified if checked else plain
        subjects.append(Subject(f"{prefix}-{i}", f"{prefix}-org-{org}", None, attributes))
        account_signals.append(signals.for_account(f"card-{card}", f"device-{device}"))
    nat_signals = {int(n): signals.for_address(nat_address(int(n))) for n in set(accounts.nat)}
    columns = zip(
        events.time.tolist(),
        events.duration.tolist(),
        events.account.tolist(),
        events.input_tokens.tolist(),
        events.output_tokens.tolist(),
        events.max_tokens.tolist(),
        events.proxy_address.tolist(),
        strict=True,
    )
    nat = accounts.nat.tolist()
    for index, (at, duration, account, given, output, cap, proxy) in enumerate(columns):
        address = nat_signals[nat[account]] if proxy < 0 else signals.for_proxy(proxy)
        yield Exchange(
            request_id=f"r{index}",
            time=at,
            duration_s=duration,
            subject=subjects[account],
            signals=account_signals[account] + address,
            estimate=RequestEstimate(MODEL, given, cap, stream=True, shapeable=True),
            usage=Usage(given, output),
        )


def log_line(exchange: Exchange, subject: Subject, decision: Decision) -> dict[str, Any]:
    """A decision-log line in ``gateway.decision_log``'s format, for ``--log``."""
    refusal = decision.refusal
    usage = exchange.usage or Usage()
    return {
        "time": round(exchange.time, 3),
        "duration_s": round(exchange.duration_s, 3),
        "request_id": exchange.request_id,
        "api": "anthropic",
        "status": 200 if decision.admitted else 429,
        "outcome": "complete" if decision.admitted else "refused",
        "model": exchange.estimate.model,
        "reserved": {
            "input_tokens": exchange.estimate.input_tokens,
            "output_tokens": exchange.estimate.max_output_tokens,
        },
        "usage": {
            "input_tokens": usage.input_tokens if decision.admitted else 0,
            "output_tokens": usage.output_tokens if decision.admitted else 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "reported": True,
        },
        "account": subject.account,
        "organization": subject.organization,
        "cluster": subject.cluster,
        "attributes": {k: v for k, v in subject.attributes.items() if k != "model"},
        "signals": [list(pair) for pair in exchange.signals],
        "decision": "admitted" if decision.admitted else "refused",
        "policy": refusal.policy if refusal else None,
        "scope": refusal.scope.value if refusal else None,
        "limit": refusal.limit.text if refusal else None,
        "shadow_refusals": [
            {"policy": r.policy, "scope": r.scope.value, "limit": r.limit.text}
            for r in decision.shadow_refusals
        ],
        "degraded": decision.degraded,
    }


async def run_exchanges(
    items: Iterable[Exchange], replayer: Replayer, tally: SimTally, log: IO[str] | None = None
) -> SimTally:
    for exchange in items:
        subject, decision = await replayer.step(exchange)
        tally.add(exchange, decision)
        if log is not None:
            log.write(json.dumps(log_line(exchange, subject, decision), separators=(",", ":")))
            log.write("\n")
    await replayer.finish()
    return tally


async def simulate(
    population: Population, policies: PolicySet, log_path: str | None = None
) -> tuple[SimTally, float]:
    """Replay ``population`` under ``policies``; the tally and the seconds it took."""
    started = time.perf_counter()
    replayer = await open_replay(policies)
    tally = SimTally(population.days, population.start)
    items = exchanges(population, policies)
    if log_path is None:
        await run_exchanges(items, replayer, tally)
    else:
        # A plain blocking file: the replay is CPU-bound and alone on its loop.
        with Path(log_path).open("w", encoding="utf-8") as log:  # noqa: ASYNC230
            await run_exchanges(items, replayer, tally, log)
    return tally, time.perf_counter() - started


async def tally_lines(
    lines: Iterable[Mapping[str, Any]], policies: PolicySet, days: int, start: float
) -> SimTally:
    """Tally a decision log (e.g. one ``--log`` wrote) by population, replayed under
    ``policies``: refused-live lines count with their reservation as what they offered."""
    found = [e for line in lines if (e := exchange_from_line(line)) is not None]
    found.sort(key=lambda e: e.time)
    return await run_exchanges(found, await open_replay(policies), SimTally(days, start))
