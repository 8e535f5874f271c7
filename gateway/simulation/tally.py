"""What a simulation run counts, per population group: exchanges, refusals by kind (own
limits or cluster rules), output offered and admitted, and tokens per day for the plot.
Tallies of disjoint accounts (a run split over workers) add up with ``merge``."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from gateway.budget.buckets import costs
from gateway.budget.decision import Decision
from gateway.metering import RequestEstimate
from gateway.policy.model import Scope
from gateway.replay import Exchange
from gateway.simulation.campaign import DAY, START


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
            if decision.capped_output is not None and output > decision.capped_output:
                # Capped (``action: cap``): the upstream was asked for at most that many.
                tokens -= output - decision.capped_output
                output = decision.capped_output
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

    def merge(self, other: SimTally) -> None:
        """Add ``other``'s counts (a run over other accounts) to these."""
        for group, count in other.groups.items():
            mine = self.groups[group]
            for name in (f.name for f in fields(Count)):
                setattr(mine, name, getattr(mine, name) + getattr(count, name))
        for key, values in other.per_day.items():
            self.per_day[key] += values
