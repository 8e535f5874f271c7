"""``gateway replay``: run a recorded decision log through the real engine under other policies.

Each line is reserved at its ``time`` with what it reserved live, and, if the replay admits
it, settled at ``time + duration_s`` (a heap of pending settles keeps the order right when
exchanges overlap). The engine's clock is injected and jumps to each event's time, so a
replay is deterministic and runs as fast as the engine goes.

What a line is settled with, when the replay admits it (docs/distillation.md, "Replay"):

- admitted live: the logged usage, or nothing (``None``) when the upstream failed, as the
  live gate settled it;
- refused live: it never ran, so there is no usage; it is settled with its reservation
  (input estimate and ``max_tokens``), the most it could have cost.

Lines without a subject (``unauthenticated``, ``not_admitted``) never reached the engine
and are skipped, as are damaged ones (not JSON, not UTF-8, or fields not of the shape the
gateway writes: signals that are not pairs, no reservation).
"""

from __future__ import annotations

import heapq
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.behaviour import Behaviour, answered
from gateway.behaviour import in_use as behaviour_in_use
from gateway.budget.decision import Decision, Refusal, Subject
from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.clusters import ClusterDirectory
from gateway.metering import RequestEstimate, Usage
from gateway.paced_gc import PacedCollection
from gateway.policy.model import PolicySet, Scope
from gateway.storage.connection import close, open_cluster_store, open_store
from gateway.values import value

# A replay runs no upkeep, so nothing extends a long exchange's reservation: it lives as
# long as any live exchange could run (the upstream timeout, 600 s, plus a margin).
RESERVATION_TTL = 665.0


@value
class Exchange:
    """One exchange as the replay needs it; ``subject.cluster`` is resolved at replay time."""

    request_id: str
    time: float
    duration_s: float
    subject: Subject
    signals: tuple[tuple[str, str], ...]
    estimate: RequestEstimate
    usage: Usage | None  # settled if admitted; None: nothing generated
    live_admitted: bool | None = None


def exchange_from_line(line: Mapping[str, Any]) -> Exchange | None:
    """A decision-log line → an Exchange; None for lines that never reached the engine."""
    if line.get("decision") not in ("admitted", "refused"):
        return None
    reserved = line["reserved"]
    estimate = RequestEstimate(
        model=line.get("model") or "",
        input_tokens=int(reserved["input_tokens"]),
        max_output_tokens=int(reserved["output_tokens"]),
        stream=False,
        requests=int(reserved.get("requests", 1)),  # older logs: one request per line
        # A logged batch (several requests) is never shaped, as live; others may be.
        shapeable=int(reserved.get("requests", 1)) == 1,
    )
    admitted = line["decision"] == "admitted"
    usage: Usage | None
    if not admitted:
        usage = Usage(estimate.input_tokens, estimate.max_output_tokens)
    elif line.get("outcome") == "upstream_unreached":
        usage = None
    else:
        u = line["usage"]
        usage = Usage(
            u["input_tokens"],
            u["output_tokens"],
            u.get("cache_creation_input_tokens", 0),
            u.get("cache_read_input_tokens", 0),
        )
    attributes = dict(line.get("attributes") or {})
    attributes["model"] = estimate.model
    subject = Subject(line["account"], line.get("organization"), None, attributes)
    return Exchange(
        request_id=line["request_id"],
        time=float(line["time"]),
        duration_s=float(line.get("duration_s") or 0.0),
        subject=subject,
        signals=tuple((str(name), str(value)) for name, value in line.get("signals") or ()),
        estimate=estimate,
        usage=usage,
        live_admitted=admitted,
    )


class ReplayClock:
    """The engine's clock: whatever time the replay has reached."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Replayer:
    """Feeds exchanges in time order to an engine; call ``step`` per exchange, then ``finish``."""

    def __init__(
        self,
        engine: BudgetEngine,
        directory: ClusterDirectory,
        clock: ReplayClock,
        behaviour: Behaviour | None = None,
    ) -> None:
        self.engine = engine
        self.directory = directory
        self.clock = clock
        # Recomputed from the replayed traffic (a logged verdict is the live one's, under
        # other policies' refusals): only when a policy reads it.
        self.behaviour = behaviour
        # (settle time, sequence, request id, usage, subject, shaped, usage as evidence):
        # the sequence breaks ties in arrival order.
        self._pending: list[tuple[float, int, str, Usage | None, Subject, bool, Usage | None]] = []
        self._sequence = 0

    async def step(self, exchange: Exchange) -> tuple[Subject, Decision]:
        await self._settle_until(exchange.time)
        self.clock.now = max(self.clock.now, exchange.time)
        subject = await self.directory.resolve(exchange.subject, exchange.signals)
        if self.behaviour is not None:
            subject = self.behaviour.annotate(subject, exchange.estimate)
        decision = await self.engine.reserve(exchange.request_id, subject, exchange.estimate)
        if decision.admitted:
            due = exchange.time + exchange.duration_s
            usage = exchange.usage
            if decision.capped_output is not None and usage is not None:
                # Shaped: the answer could not have run past the lower cap.
                output = min(usage.output_tokens, decision.capped_output)
                usage = replace(usage, output_tokens=output)
            # Not an answer to judge (gateway.behaviour.answered): no usage to count.
            judged = usage if answered(exchange.estimate) else None
            shaped = decision.capped_output is not None
            entry = (due, self._sequence, exchange.request_id, usage, subject, shaped, judged)
            heapq.heappush(self._pending, entry)
            self._sequence += 1
        return subject, decision

    async def finish(self) -> None:
        await self._settle_until(float("inf"))

    async def _settle_until(self, until: float) -> None:
        # A settle due at the same time as a reserve goes first: live, an exchange ends
        # (and is settled) before the next one that starts at that millisecond.
        while self._pending and self._pending[0][0] <= until:
            due, _, request_id, usage, subject, shaped, judged = heapq.heappop(self._pending)
            self.clock.now = max(self.clock.now, due)
            await self.engine.settle(request_id, usage)
            if self.behaviour is not None and judged is not None:
                self.behaviour.answered(subject, judged.output_tokens, shaped)


def cluster_policies_dropped(policies: PolicySet) -> PolicySet:
    """The same set without its cluster-scope policies: "per-account limits only"."""
    kept = tuple(p for p in policies.policies if p.scope is not Scope.CLUSTER)
    return replace(policies, policies=kept)


@dataclass(slots=True)
class PolicyCount:
    requests: int = 0
    tokens: int = 0
    accounts: set[str] = field(default_factory=set)
    clusters: set[str] = field(default_factory=set)

    def add(self, exchange: Exchange, subject: Subject) -> None:
        self.requests += 1
        self.tokens += exchange.usage.tokens if exchange.usage is not None else 0
        self.accounts.add(subject.account)
        self.clusters.add(subject.scope_id(Scope.CLUSTER) or subject.account)

    def as_json(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "tokens": self.tokens,
            "accounts": len(self.accounts),
            "clusters": len(self.clusters),
        }


@dataclass(slots=True)
class GroupCount:
    """One cohort's traffic (e.g. one value of a tier attribute): what was offered, what
    the replay admitted. Offered tokens are what the log says was used, or what was
    reserved where the exchange never ran. ``shaped`` counts exchanges admitted with a
    lowered cap (``action: cap``); they count as admitted, their output tokens after the
    cap."""

    requests: int = 0
    admitted: int = 0
    refused: int = 0
    shaped: int = 0
    input_tokens_offered: int = 0
    input_tokens_admitted: int = 0
    output_tokens_offered: int = 0
    output_tokens_admitted: int = 0

    def add(self, exchange: Exchange, decision: Decision) -> None:
        offered_in, offered_out = offered(exchange)
        self.requests += 1
        self.input_tokens_offered += offered_in
        self.output_tokens_offered += offered_out
        if decision.admitted:
            self.admitted += 1
            self.input_tokens_admitted += offered_in
            if decision.capped_output is not None:
                self.shaped += 1
                offered_out = min(offered_out, decision.capped_output)
            self.output_tokens_admitted += offered_out
        else:
            self.refused += 1

    def as_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def offered(exchange: Exchange) -> tuple[int, int]:
    """(input, output) tokens the exchange asks for: its logged usage where it ran live,
    else its reservation (input estimate and cap)."""
    if exchange.live_admitted and exchange.usage is not None:
        return exchange.usage.billable_input_tokens, exchange.usage.output_tokens
    return exchange.estimate.input_tokens, exchange.estimate.max_output_tokens


@dataclass(slots=True)
class Tally:
    """What a replay refused, per policy; shadow would-be refusals apart; and, when a
    grouping attribute is given (``by``), what each of its values offered and got."""

    by: str | None = None
    exchanges: int = 0
    skipped: int = 0
    late: int = 0  # lines that started more than REORDER_WINDOW before one already read
    admitted: int = 0
    newly_refused: int = 0  # admitted live, refused by the replay
    newly_admitted: int = 0  # refused live, admitted by the replay
    refused: dict[str, PolicyCount] = field(default_factory=dict)
    shadow: dict[str, PolicyCount] = field(default_factory=dict)
    groups: dict[str, GroupCount] = field(default_factory=dict)

    def add(self, exchange: Exchange, subject: Subject, decision: Decision) -> None:
        self.exchanges += 1
        if self.by is not None:
            # A line without the attribute (an older log, a caller without it) is "".
            value = exchange.subject.attributes.get(self.by, "")
            self.groups.setdefault(value, GroupCount()).add(exchange, decision)
        self.admitted += decision.admitted
        if exchange.live_admitted is not None and exchange.live_admitted != decision.admitted:
            self.newly_admitted += decision.admitted
            self.newly_refused += not decision.admitted
        if decision.refusal is not None:
            _count(self.refused, decision.refusal).add(exchange, subject)
        for shadow in decision.shadow_refusals:
            _count(self.shadow, shadow).add(exchange, subject)

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "exchanges": self.exchanges,
            "skipped": self.skipped,
            "admitted": self.admitted,
            "refused": self.exchanges - self.admitted,
            "newly_refused": self.newly_refused,
            "newly_admitted": self.newly_admitted,
            "policies": {k: v.as_json() for k, v in sorted(self.refused.items())},
            "shadow": {k: v.as_json() for k, v in sorted(self.shadow.items())},
        }
        if self.by is not None:
            found["groups"] = {k: v.as_json() for k, v in sorted(self.groups.items())}
        return found


def _count(table: dict[str, PolicyCount], refusal: Refusal) -> PolicyCount:
    return table.setdefault(refusal.policy, PolicyCount())


async def open_replay(
    policies: PolicySet, storage: str = "memory://", reservation_ttl: float = RESERVATION_TTL
) -> Replayer:
    """A replayer over a fresh engine and cluster directory, both on the replay's clock
    (the directory's cache too, so its expiry is replay time). A Redis store gets a fresh
    key prefix: a replay never touches live counters or links, nor an earlier replay's."""
    store = open_store(storage, prefix=f"gw-replay-{uuid.uuid4().hex[:12]}")
    clock = ReplayClock()
    holder = PolicyHolder(policies)
    engine = BudgetEngine(
        store, holder, reservation_ttl=reservation_ttl, clock=clock, fallback=storage != "memory://"
    )
    directory = ClusterDirectory(
        open_cluster_store(store, founder_names=True),
        holder,
        clock=clock,
        monotonic=clock,
        outage=engine.outage,
    )
    return Replayer(
        engine, directory, clock, Behaviour(clock) if behaviour_in_use(policies) else None
    )


# Lines are written when exchanges end, so their start times arrive out of order by at
# most the longest exchange. Held back this long behind the latest line, they are replayed
# in start order while memory holds only that window, never the whole log.
REORDER_WINDOW = 3600.0


def in_start_order(
    lines: Iterable[Mapping[str, Any]], tally: Tally, window: float = REORDER_WINDOW
) -> Iterator[Exchange]:
    """Exchanges by start time, from lines in the order they were written (by end time).
    An exchange that started more than ``window`` seconds before a line already read is
    replayed as soon as it is read (its place is lost; counted in ``tally.late``)."""
    held: list[tuple[float, int, Exchange]] = []
    order = 0
    released = -math.inf
    for line in lines:
        try:
            exchange = exchange_from_line(line)
        except (KeyError, TypeError, ValueError, AttributeError):
            exchange = None  # an object, but not as the gateway writes one: damaged
        if exchange is None:
            tally.skipped += 1
            continue
        if exchange.time < released:
            tally.late += 1
        heapq.heappush(held, (exchange.time, order, exchange))
        order += 1
        ends = exchange.time + exchange.duration_s
        while held and held[0][0] < ends - window:
            released = max(released, held[0][0])
            yield heapq.heappop(held)[2]
    while held:
        yield heapq.heappop(held)[2]


async def replay_lines(
    lines: Iterable[Mapping[str, Any]],
    policies: PolicySet,
    storage: str = "memory://",
    *,
    by: str | None = None,
    each: Callable[[Exchange, Decision], None] | None = None,
) -> Tally:
    """Replay decision-log lines (any iterable: a file is read as it goes) and tally them;
    ``each`` sees every exchange and its decision, in time order (nothing else keeps them:
    memory holds what is in flight, never the log)."""
    tally = Tally(by=by)
    replayer = await open_replay(policies, storage)
    try:
        with PacedCollection() as paced:
            for exchange in in_start_order(lines, tally):
                subject, decision = await replayer.step(exchange)
                tally.add(exchange, subject, decision)
                if each is not None:
                    each(exchange, decision)
                paced.tick()
            await replayer.finish()
    finally:
        await close(replayer.engine.store)
    return tally
