"""``gateway demo``: a self-contained look through the real HTTP path.

It starts the mock upstream and the gateway (memory:// counters) on free loopback ports,
sends a few legitimate accounts' traffic and a linked ring's, and prints what each got
through and which scope stopped it. It ends by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from gateway.admission import Admission
from gateway.app import create_app
from gateway.metering import UsageRecord
from gateway.mock_upstream import MockConfig, create_mock_app
from gateway.policy.loader import load_policy_set
from gateway.server import running
from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class Caller:
    population: str
    account: str
    organization: str
    fingerprint: str
    requests: int


def callers(ring_size: int, per_ring_account: int) -> list[Caller]:
    legit = [
        Caller("legitimate", f"acct-{org}-{n}", f"org-{org}", f"card-{org}-{n}", 40)
        for org in ("acme", "globex", "initech")
        for n in (1, 2)
    ]
    # The ring: many light accounts, each its own "organization", one shared card.
    ring = [
        Caller("linked ring", f"ring-{n:03d}", f"ring-org-{n:03d}", "card-shared", per_ring_account)
        for n in range(ring_size)
    ]
    return legit + ring


class _Tally:
    """A usage hook: which policy and scope decided each exchange, from the gateway itself."""

    def __init__(self) -> None:
        self.stopped_by: dict[str, Counter[str]] = defaultdict(Counter)

    async def __call__(self, record: UsageRecord, admission: Admission | None) -> None:
        if admission is None:
            return
        decision = admission.decision
        account = admission.caller.subject.account
        if decision.admitted:
            self.stopped_by[account]["admitted"] += 1
        elif decision.refusal is not None:
            self.stopped_by[account][f"{decision.refusal.scope.value} scope"] += 1


class _PacedClock:
    """The gateway's clock for the demo: every request sent moves it on by the same step,
    so the traffic is ``span`` seconds' worth however fast this machine sends it."""

    def __init__(self, span: float, requests: int) -> None:
        self.start = time.time()
        self.step = span / requests
        self.sent = 0

    def __call__(self) -> float:
        return self.start + self.sent * self.step


async def run_demo(
    policies: str, ring_size: int = 40, per_ring_account: int = 100, span: float = 20.0
) -> DemoResult:
    policy_set = load_policy_set(policies)
    tally = _Tally()
    everyone = callers(ring_size, per_ring_account)
    clock = _PacedClock(span, sum(c.requests for c in everyone))
    mock = create_mock_app(MockConfig(output_tokens=60, token_delay_s=0))
    started = time.monotonic()
    async with running(mock) as upstream:
        settings = Settings(upstream=upstream)
        app = create_app(settings, policies=policy_set, clock=clock, hooks=[tally])
        async with (
            running(app) as gateway,
            httpx.AsyncClient(
                base_url=gateway, limits=httpx.Limits(max_connections=32), timeout=30
            ) as client,
        ):
            queue: asyncio.Queue[Caller] = asyncio.Queue()
            for i in range(max(c.requests for c in everyone)):
                for caller in everyone:
                    if i < caller.requests:
                        queue.put_nowait(caller)

            serial = itertools.count()

            async def worker() -> None:
                while not queue.empty():
                    caller = queue.get_nowait()
                    clock.sent += 1
                    await client.post(
                        "/v1/messages",
                        json={
                            "model": "claude-demo",
                            "max_tokens": 200,
                            "messages": [{"role": "user", "content": "Explain step by step."}],
                        },
                        headers={
                            "x-account-id": caller.account,
                            "x-organization-id": caller.organization,
                            "x-payment-fingerprint": caller.fingerprint,
                            "x-forwarded-for": _address(caller, next(serial)),
                        },
                    )

            await asyncio.gather(*(worker() for _ in range(32)))
    return DemoResult(_tabulate(everyone, tally), policies, span, time.monotonic() - started)


def _address(caller: Caller, serial: int) -> str:
    """Where the edge saw the caller: an office network per legitimate organization; for the
    ring, residential proxies, a fresh address every time, which link nothing."""
    if caller.population == "linked ring":
        return f"203.{serial // 65536 % 256}.{serial // 256 % 256}.{serial % 256}"
    return f"198.51.{sum(map(ord, caller.organization)) % 256}.{len(caller.account)}"


def _row(cells: Sequence[object], widths: list[int]) -> str:
    first, *rest = (str(c) for c in cells)
    return f"{first:<12}" + "".join(f"{c:>{w + 2}}" for c, w in zip(rest, widths, strict=True))


@dataclass(frozen=True, slots=True)
class DemoResult:
    rows: dict[str, Counter[str]]  # population -> accounts, sent, admitted, "<scope> scope"
    policies: str
    span: float
    seconds: float

    def render(self) -> str:
        scopes = sorted({k for row in self.rows.values() for k in row if k.endswith("scope")})
        header = ["population", "accounts", "sent", "admitted"]
        header += [f"refused ({s})" for s in scopes]
        widths = [max(8, len(h)) for h in header[1:]]
        sent = sum(row["sent"] for row in self.rows.values())
        lines = [
            f"gateway demo: mock upstream + gateway on memory://, {self.policies}; "
            f"{sent} requests paced as {self.span:.0f} s of traffic",
            "",
            _row(header, widths),
        ]
        for population, row in self.rows.items():
            cells = [population, row["accounts"], row["sent"], row["admitted"]]
            lines.append(_row(cells + [row[s] for s in scopes], widths))
        lines += ["", self._verdict(), f"({self.seconds:.1f} s)"]
        return "\n".join(lines)

    def _verdict(self) -> str:
        ring, legit = self.rows["linked ring"], self.rows["legitimate"]
        own = ring["account scope"] + ring["organization scope"]
        legit_refused = legit["sent"] - legit["admitted"]
        return (
            f"The ring's accounts were refused {own} times by their own account or organization "
            f"limits and {ring['cluster scope']} times by their shared cluster budget (they share "
            f"one payment card, so the gateway linked them). Legitimate accounts: "
            f"{legit_refused} of {legit['sent']} requests refused."
        )


def _tabulate(everyone: list[Caller], tally: _Tally) -> dict[str, Counter[str]]:
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for caller in everyone:
        rows[caller.population]["accounts"] += 1
        rows[caller.population]["sent"] += caller.requests
        rows[caller.population].update(tally.stopped_by[caller.account])
    return dict(rows)
