"""Policies and a subject → the buckets one request debits.

One bucket per (policy, scope id, limit). Its key names the counter by policy,
scope, scope id, metric and window — never by amount, so a reload or an override
that changes an amount keeps what was already spent.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from urllib.parse import quote

from gateway.budget.decision import Subject
from gateway.budget.store import DAY, ENFORCED_GROUP, INFLIGHT, MONTH, ROLLING, Bucket
from gateway.metering import RequestEstimate, Usage
from gateway.policy.model import (
    CLUSTER_ACCOUNTS,
    Limit,
    Metric,
    Mode,
    Policy,
    PolicySet,
    Scope,
    Unit,
    replace_metrics,
)
from gateway.values import value

_WINDOWS = {Unit.DAY: DAY, Unit.MONTH: MONTH}

# Live overrides (``gateway.overrides``): a scope id's limits set at run time, read from a
# local snapshot so the request path makes no extra round trip. None: no override.
OverrideLookup = Callable[[Scope, str], tuple[Limit, ...] | None]


@value
class Planned:
    """A bucket with the policy it came from, to name refusals and statuses."""

    policy: Policy
    scope_id: str
    limit: Limit
    bucket: Bucket

    @property
    def enforced(self) -> bool:
        return self.policy.mode is Mode.ENFORCE


def bucket_key(policy: str, scope: Scope, scope_id: str, limit: Limit) -> str:
    # Percent-encoding every part keeps ':' (and braces, spaces, anything) out of the
    # parts, so two different scope ids can never produce the same key.
    parts = (policy, scope.value, scope_id, limit.metric.value, limit.window_name)
    return ":".join([_quote(part) for part in parts])


@lru_cache(maxsize=65536)
def _quote(part: str) -> str:
    return quote(part, safe="")


def costs(estimate: RequestEstimate | None) -> dict[Metric, int]:
    """What a request reserves per metric (no estimate: only the request and its slot)."""
    input_tokens = estimate.input_tokens if estimate else 0
    output_tokens = estimate.max_output_tokens if estimate else 0
    return {
        Metric.REQUESTS: estimate.requests if estimate else 1,
        Metric.INPUT_TOKENS: input_tokens,
        Metric.OUTPUT_TOKENS: output_tokens,
        Metric.TOKENS: input_tokens + output_tokens,
        Metric.CONCURRENT: 1,
    }


# A reservation that expires unsettled (its replica died, or its store stalled) frees its
# concurrency slot and keeps the rest: the request was made, and its output may have been
# served. A settle that comes later still corrects it to the real usage.
_KEPT_ON_EXPIRY = {Metric.REQUESTS, Metric.TOKENS, Metric.INPUT_TOKENS, Metric.OUTPUT_TOKENS}
_KEPT_VALUES = {metric.value for metric in _KEPT_ON_EXPIRY}


def actual_costs(usage: Usage | None) -> dict[str, int]:
    """What a settled request really cost, per metric; ``requests`` keeps its reservation."""
    used = usage or Usage()
    return {
        Metric.INPUT_TOKENS.value: used.billable_input_tokens,
        Metric.OUTPUT_TOKENS.value: used.output_tokens,
        Metric.TOKENS.value: used.tokens,
        Metric.CONCURRENT.value: 0,
    }


@lru_cache(maxsize=131072)  # the same few buckets recur for every request of an account
def _shape(policy: str, scope: Scope, scope_id: str, limit: Limit) -> tuple[str, str, str, int]:
    """A bucket's key, metric, window and window length: all but what the request costs."""
    unit = limit.unit
    window = INFLIGHT if unit is None else _WINDOWS.get(unit, ROLLING)
    seconds = unit.seconds if unit is not None else 0
    return bucket_key(policy, scope, scope_id, limit), limit.metric.value, window, seconds


def _bucket(policy: Policy, scope_id: str, limit: Limit, cost: int, group: int) -> Bucket:
    key, metric, window, seconds = _shape(policy.name, policy.scope, scope_id, limit)
    return Bucket(
        key=key,
        metric=metric,
        window=window,
        seconds=seconds,
        amount=limit.amount,
        cost=cost,
        group=group,
        expire_cost=cost if limit.metric in _KEPT_ON_EXPIRY else 0,
    )


def _limits(policy: Policy, scope_id: str, overrides: OverrideLookup | None) -> tuple[Limit, ...]:
    limits = policy.limits_for(scope_id)
    live = overrides(policy.scope, scope_id) if overrides is not None else None
    # A live override sits on top of the file's: the operator's latest word wins.
    return limits if live is None else replace_metrics(limits, live)


def _planned(
    policies: Iterable[tuple[int, Policy, str]],
    cost: Mapping[Metric, int],
    overrides: OverrideLookup | None,
    attributes: Mapping[str, str] | None = None,
    cluster_accounts: int = 1,
) -> list[Planned]:
    planned: dict[str, Planned] = {}
    for index, policy, scope_id in policies:
        group = ENFORCED_GROUP if policy.mode is Mode.ENFORCE else index + 1
        factor = policy.factor(attributes or {}, cluster_accounts)
        for limit in _limits(policy, scope_id, overrides):
            if factor != 1:
                limit = Limit(limit.metric, int(limit.amount * factor), limit.unit)
            item = Planned(
                policy, scope_id, limit, _bucket(policy, scope_id, limit, cost[limit.metric], group)
            )
            # Two limits of one policy on the same metric and window share a counter;
            # debiting it twice would double-count, so the stricter one stands for both.
            known = planned.get(item.bucket.key)
            if known is None or limit.amount < known.limit.amount:
                planned[item.bucket.key] = item
    return list(planned.values())


def plan(
    policies: PolicySet,
    subject_attributes: Mapping[str, str],
    scope_ids: Mapping[Scope, str | None],
    estimate: RequestEstimate | None,
    overrides: OverrideLookup | None = None,
    cluster_organizations: int = 1,
    cluster_accounts: int = 1,
) -> list[Planned]:
    """Every bucket of every policy that applies to the subject, with this request's cost.

    A cluster policy with ``min_organizations`` applies only when the subject's cluster
    spans that many organizations (``Subject.cluster_organizations``)."""
    chosen = []
    for index, policy in enumerate(policies.policies):
        scope_id = scope_ids.get(policy.scope)
        if (
            scope_id is not None
            and policy.min_organizations <= cluster_organizations
            and policy.applies(subject_attributes)
        ):
            chosen.append((index, policy, scope_id))
    return _planned(chosen, costs(estimate), overrides, subject_attributes, cluster_accounts)


def plan_usage(
    policies: PolicySet,
    scope: Scope,
    scope_id: str,
    attributes: Mapping[str, str] | None,
    overrides: OverrideLookup | None = None,
) -> list[Planned]:
    """The buckets of one scope id (all its policies when ``attributes`` is None).

    Cluster policies with ``min_organizations`` are listed whatever the cluster spans: an
    operator asking about a cluster sees every budget that can apply to it (one that does
    not apply yet shows no spend)."""
    chosen = [
        (index, policy, scope_id)
        for index, policy in enumerate(policies.policies)
        if policy.scope is scope and (attributes is None or policy.applies(attributes))
    ]
    return _planned(chosen, costs(None), overrides, attributes)


# A subject's policies, scope ids and limits (its plan without costs), and per template
# its plans for the few costs that recur (requests and max_tokens repeat; input varies).
MAX_TEMPLATES = 65_536
MAX_COSTS = 4


class Planner:
    """``plan`` remembered: a replay plans the same buckets for every request of an
    account, and building them was a fifth of its time. Only without live overrides
    (they change under it); a new policy set starts afresh. Returns tuples: shared, so
    never to be changed."""

    def __init__(self, size: int = MAX_TEMPLATES) -> None:
        self._size = size
        self._policies: PolicySet | None = None
        self._read: tuple[str, ...] = ()  # attributes a match or a scale_by reads
        self._templates: OrderedDict[tuple[object, ...], _Template] = OrderedDict()

    def plan(
        self,
        policies: PolicySet,
        subject: Subject,
        estimate: RequestEstimate | None,
        overrides: OverrideLookup | None = None,
    ) -> Sequence[Planned]:
        """``plan`` for ``subject``'s scope ids, attributes and cluster."""
        organizations, accounts = subject.cluster_organizations, subject.cluster_accounts
        if overrides is not None:
            scope_ids = {scope: subject.scope_id(scope) for scope in Scope}
            attributes = subject.attributes
            return tuple(
                plan(policies, attributes, scope_ids, estimate, overrides, organizations, accounts)
            )
        if policies is not self._policies:
            self._policies = policies
            self._read = _attributes_read(policies)
            self._templates.clear()
        attributes = subject.attributes
        key = (
            subject.account,
            subject.organization,
            subject.cluster,
            subject.cluster_exempt,
            organizations,
            accounts,
            *[attributes.get(name) for name in self._read],
        )
        template = self._templates.get(key)
        if template is None:
            scope_ids = {scope: subject.scope_id(scope) for scope in Scope}
            chosen = plan(policies, attributes, scope_ids, None, None, organizations, accounts)
            template = self._templates[key] = _Template(chosen)
            if len(self._templates) > self._size:
                self._templates.popitem(last=False)
        else:
            self._templates.move_to_end(key)
        return template.with_costs(costs(estimate))


def _attributes_read(policies: PolicySet) -> tuple[str, ...]:
    read = {key for policy in policies.policies for key, _ in policy.match}
    read |= {
        policy.scale_by
        for policy in policies.policies
        if policy.scale_by is not None and policy.scale_by != CLUSTER_ACCOUNTS
    }
    return tuple(sorted(read))


class _Template:
    """One subject's planned buckets at no cost, and its plans per recurring cost."""

    __slots__ = ("metrics", "planned", "plans")

    def __init__(self, planned: list[Planned]) -> None:
        self.planned = planned
        self.metrics = tuple(dict.fromkeys(p.limit.metric for p in planned))
        self.plans: dict[tuple[int, ...], tuple[Planned, ...]] = {}

    def with_costs(self, cost: Mapping[Metric, int]) -> tuple[Planned, ...]:
        key = tuple([cost[metric] for metric in self.metrics])
        found = self.plans.get(key)
        if found is None:
            found = tuple(
                Planned(p.policy, p.scope_id, p.limit, _costed(p.bucket, cost[p.limit.metric]))
                for p in self.planned
            )
            if len(self.plans) >= MAX_COSTS:
                self.plans.clear()
            self.plans[key] = found
        return found


def _costed(bucket: Bucket, cost: int) -> Bucket:
    return Bucket(
        key=bucket.key,
        metric=bucket.metric,
        window=bucket.window,
        seconds=bucket.seconds,
        amount=bucket.amount,
        cost=cost,
        group=bucket.group,
        expire_cost=cost if bucket.metric in _KEPT_VALUES else 0,
    )
