"""Real spend, from the mock's ledger, held against limits.

``Ledger`` reads ``GET /mock/ledger`` (see ``gateway.mock.ledger``): one entry per request
that reached the upstream, with the identity it carried and the tokens really served. Per
scope id (an account, an organization) it adds up requests, tokens (input plus output, as
the gateway's ``tokens`` metric counts them) and the most requests that ran upstream at once.

``violations`` lists every scope id whose real spend passed a limit, in words. Requests are
exact. Tokens allow ``CUT_SLACK_TOKENS`` per stream that ended early (its client left, or
the upstream cut it): the upstream may write a delta or two the gateway has not read yet
when it cancels, and the gateway charges a cut stream from what it read (docs/metering.md,
"cut short"). Whole answers and refusals allow nothing. Concurrency counts a request as
ended ``END_GRACE_S`` before the mock recorded its end: the mock writes the record after
its last byte has gone, and notices a dropped connection a moment after the gateway dropped
it, while the gateway frees the slot as soon as it has that byte or has dropped it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CUT_SLACK_TOKENS = 4
END_GRACE_S = 0.05
SCOPES = ("account", "organization")


@dataclass(frozen=True, slots=True)
class Entry:
    account: str
    organization: str
    stream: bool
    status: int | None
    outcome: str
    input_tokens: int
    output_tokens: int
    started_at: float
    ended_at: float | None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Entry:
        accounts, organizations = raw["x-account-id"], raw["x-organization-id"]
        return cls(
            account=accounts[0] if accounts else "",
            organization=organizations[0] if organizations else "",
            stream=bool(raw["stream"]),
            status=raw["status"],
            outcome=str(raw["outcome"]),
            input_tokens=int(raw["input_tokens"]),
            output_tokens=int(raw["output_tokens"]),
            started_at=float(raw["started_at"]),
            ended_at=None if raw["ended_at"] is None else float(raw["ended_at"]),
        )

    def scope_id(self, scope: str) -> str:
        return self.account if scope == "account" else self.organization

    @property
    def cut(self) -> bool:
        return self.stream and self.outcome in ("cancelled", "broken")


@dataclass(slots=True)
class Spend:
    requests: int = 0
    tokens: int = 0
    cut_streams: int = 0
    peak: int = 0  # the most requests upstream at once


@dataclass(frozen=True, slots=True)
class Limits:
    """One scope id's limits; None where the test sets none (or none binds)."""

    requests: int | None = None
    tokens: int | None = None
    concurrent: int | None = None


def _peak(entries: Iterable[Entry], now: float) -> int:
    edges: list[tuple[float, int]] = []
    for entry in entries:
        ended = now if entry.ended_at is None else entry.ended_at - END_GRACE_S
        edges.append((entry.started_at, 1))
        edges.append((max(entry.started_at, ended), -1))
    running = peak = 0
    for _, step in sorted(edges):  # at a tie, an end (-1) sorts before a start
        running += step
        peak = max(peak, running)
    return peak


class Ledger:
    def __init__(self, raw: Iterable[Mapping[str, Any]]) -> None:
        self.entries = [Entry.from_json(item) for item in raw]

    def active(self) -> list[Entry]:
        return [entry for entry in self.entries if entry.outcome == "active"]

    def of(self, scope: str, scope_id: str) -> list[Entry]:
        return [entry for entry in self.entries if entry.scope_id(scope) == scope_id]

    def spend(self, scope: str) -> dict[str, Spend]:
        now = max((e.ended_at or e.started_at for e in self.entries), default=0.0)
        grouped: dict[str, list[Entry]] = defaultdict(list)
        for entry in self.entries:
            grouped[entry.scope_id(scope)].append(entry)
        totals: dict[str, Spend] = {}
        for scope_id, entries in grouped.items():
            totals[scope_id] = Spend(
                requests=len(entries),
                tokens=sum(e.input_tokens + e.output_tokens for e in entries),
                cut_streams=sum(e.cut for e in entries),
                peak=_peak(entries, now),
            )
        return totals

    def requests(self, scope: str, scope_id: str) -> int:
        return len(self.of(scope, scope_id))

    def violations(self, scope: str, limits: Mapping[str, Limits]) -> list[str]:
        """Every way real spend passed ``limits`` (scope id → limits) in ``scope``."""
        found = []
        spend = self.spend(scope)
        for scope_id, limit in limits.items():
            used = spend.get(scope_id, Spend())
            where = f"{scope} {scope_id!r}"
            if limit.requests is not None and used.requests > limit.requests:
                found.append(f"{where}: {used.requests} requests served, limit {limit.requests}")
            if limit.tokens is not None:
                allowed = limit.tokens + CUT_SLACK_TOKENS * used.cut_streams
                if used.tokens > allowed:
                    found.append(
                        f"{where}: {used.tokens} tokens served, limit {limit.tokens} "
                        f"(+{allowed - limit.tokens} for {used.cut_streams} cut streams)"
                    )
            if limit.concurrent is not None and used.peak > limit.concurrent:
                found.append(
                    f"{where}: {used.peak} requests upstream at once, limit {limit.concurrent}"
                )
        return found
