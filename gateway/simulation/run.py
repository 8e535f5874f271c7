"""Replay a synthetic population through the real engine and tally it by population.

Events go straight from the population's arrays into the replayer, one ``Exchange`` at
a time (no log file unless one is asked for), so the engine is the only real cost.
Accounts are named by group: ``acct-…`` the background, ``cust-…`` a scenario's
customers, ``camp-…`` the campaign.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import orjson

from gateway.budget.decision import Decision, Subject
from gateway.identity import hash_value, signal_value
from gateway.metering import RequestEstimate, Usage
from gateway.paced_gc import PacedCollection
from gateway.policy.model import PolicySet
from gateway.replay import Exchange, Replayer, exchange_from_line, open_replay
from gateway.simulation.campaign import DAY
from gateway.simulation.population import BACKGROUND, CAMPAIGN, CUSTOMER, Population
from gateway.simulation.tally import SimTally
from gateway.workers import Report

MODEL = "model-large"
PAYMENT_HEADER = "x-payment-fingerprint"
DEVICE_HEADER = "x-device-id"
_SCRAMBLE = 0x9E3779B97F4A7C15  # odd, so j → j * _SCRAMBLE mod 2^40 is a bijection


PREFIXES = {BACKGROUND: "acct", CUSTOMER: "cust", CAMPAIGN: "camp"}
_IDS = {BACKGROUND: "b", CUSTOMER: "u", CAMPAIGN: "c"}  # request ids: b12, u3, c4077
REPORT_EVERY = 20_000  # exchanges between two progress reports


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
        if not self._addresses:
            return ()
        bits = (counter * _SCRAMBLE) % (1 << 40)
        value = f"2a00:{bits >> 24:x}:{(bits >> 8) & 0xFFFF:x}:{(bits & 0xFF) << 8:x}::/56"
        return tuple((s.name, hash_value(s.name, value)) for s in self._addresses)


def nat_address(nat: int) -> str:
    return f"{20 + nat // 65536}.{(nat >> 8) & 255}.{nat & 255}.10"


def exchanges(
    population: Population, policies: PolicySet, keep: npt.NDArray[np.bool_] | None = None
) -> Iterator[Exchange]:
    """The population's events as exchanges, in time order, a day drawn at a time; with
    ``keep``, only those of the accounts it marks."""
    accounts = population.accounts
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
    nat, group_of_account = accounts.nat.tolist(), accounts.group.tolist()
    for events in population.each_day():
        if keep is not None:
            events = events.rows(keep[events.account])
        columns = zip(
            events.time.tolist(),
            events.duration.tolist(),
            events.account.tolist(),
            events.input_tokens.tolist(),
            events.output_tokens.tolist(),
            events.max_tokens.tolist(),
            events.serial.tolist(),
            strict=True,
        )
        for at, duration, account, given, output, cap, serial in columns:
            held = nat[account]
            # The campaign's serial numbers its requests: each its own proxy address.
            address = nat_signals[held] if held >= 0 else signals.for_proxy(serial)
            yield Exchange(
                request_id=f"{_IDS[group_of_account[account]]}{serial}",
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
    if decision.capped_output is not None and usage.output_tokens > decision.capped_output:
        # As live: the upstream was sent the lower max_tokens and stopped there.
        usage = Usage(usage.input_tokens, decision.capped_output)
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
    items: Iterable[Exchange],
    replayer: Replayer,
    tally: SimTally,
    log: IO[bytes] | None = None,
    report: Report | None = None,
) -> SimTally:
    """Replay ``items``, tallied; ``report`` gets (simulated day, exchanges) now and then."""
    count = 0
    with PacedCollection() as paced:
        for exchange in items:
            subject, decision = await replayer.step(exchange)
            tally.add(exchange, decision)
            if log is not None:
                # orjson: json.dumps of a line cost about a third of a simulated exchange.
                log.write(orjson.dumps(log_line(exchange, subject, decision)) + b"\n")
            count += 1
            if report is not None and count % REPORT_EVERY == 0:
                report((int((exchange.time - tally.start) // DAY), count))
            paced.tick()
        await replayer.finish()
    if report is not None:
        report((tally.days, count))
    return tally


async def simulate(
    population: Population,
    policies: PolicySet,
    log_path: str | None = None,
    keep: npt.NDArray[np.bool_] | None = None,
    report: Report | None = None,
) -> SimTally:
    """Replay ``population`` (the accounts ``keep`` marks) under ``policies``."""
    replayer = await open_replay(policies)
    tally = SimTally(population.days, population.start)
    items = exchanges(population, policies, keep)
    if log_path is None:
        return await run_exchanges(items, replayer, tally, None, report)
    # A plain blocking file: the replay is CPU-bound and alone on its loop.
    with Path(log_path).open("wb") as log:  # noqa: ASYNC230
        return await run_exchanges(items, replayer, tally, log, report)


async def tally_lines(
    lines: Iterable[Mapping[str, Any]], policies: PolicySet, days: int, start: float
) -> SimTally:
    """Tally a decision log (e.g. one ``--log`` wrote) by population, replayed under
    ``policies``: refused-live lines count with their reservation as what they offered."""
    found = [e for line in lines if (e := exchange_from_line(line)) is not None]
    found.sort(key=lambda e: e.time)
    return await run_exchanges(found, await open_replay(policies), SimTally(days, start))
