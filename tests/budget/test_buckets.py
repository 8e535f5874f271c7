"""Which policies a request plans: ``min_organizations`` against the subject's cluster."""

from __future__ import annotations

from dataclasses import replace

from gateway.budget.buckets import Planner, plan, plan_usage
from gateway.budget.decision import Subject
from gateway.policy.model import Metric, Mode, Scope, Unit
from tests.budget.helpers import estimate, limit, policy, policy_set

LINKED = policy("linked", limit(Metric.TOKENS, 50_000_000, Unit.DAY), scope=Scope.CLUSTER)
RINGS = replace(
    policy("rings", limit(Metric.OUTPUT_TOKENS, 20_000, Unit.DAY), scope=Scope.CLUSTER),
    min_organizations=3,
)
OWN = policy("own", limit(Metric.TOKENS, 5_000_000, Unit.DAY))
POLICIES = policy_set(OWN, LINKED, RINGS)


def planned(subject: Subject) -> list[str]:
    scope_ids = {scope: subject.scope_id(scope) for scope in Scope}
    chosen = plan(
        POLICIES,
        subject.attributes,
        scope_ids,
        estimate(10, 10),
        None,
        subject.cluster_organizations,
    )
    return [p.policy.name for p in chosen]


def test_a_cluster_of_fewer_organizations_skips_the_policy() -> None:
    ring = Subject("a", "o1", "linked-1", {"model": "m"}, cluster_organizations=2)
    assert planned(ring) == ["own", "linked"]
    assert planned(replace(ring, cluster_organizations=3)) == ["own", "linked", "rings"]
    assert planned(replace(ring, cluster_organizations=1000)) == ["own", "linked", "rings"]


def test_an_account_on_its_own_counts_one_organization() -> None:
    alone = Subject("a", None, attributes={"model": "m"})
    assert alone.cluster_organizations == 1
    assert planned(alone) == ["own", "linked"]


def test_an_exempt_subject_plans_no_cluster_policy_however_many_organizations() -> None:
    exempt = Subject("a", "o", "linked-1", {"model": "m"}, True, cluster_organizations=9)
    assert planned(exempt) == ["own"]


def test_usage_lists_every_cluster_policy() -> None:
    names = [p.policy.name for p in plan_usage(POLICIES, Scope.CLUSTER, "linked-1", None)]
    assert names == ["linked", "rings"]


SCALED = replace(
    policy("scaled", limit(Metric.OUTPUT_TOKENS, 4_000, Unit.DAY), scope=Scope.CLUSTER),
    scale_by="cluster_accounts",
    scale_exponent=0.5,
)
SUSPECT = replace(
    policy(
        "suspect",
        limit(Metric.REQUESTS, 10, Unit.MINUTE),
        limit(Metric.TOKENS, 9_000, Unit.HOUR),
        match=(("tier", "fr*"),),
    ),
    mode=Mode.SHADOW,
)
SEATS = replace(policy("seats", limit(Metric.INPUT_TOKENS, 500, Unit.DAY)), scale_by="seats")


def test_the_planner_plans_what_plan_does_for_every_subject_and_cost() -> None:
    policies = policy_set(OWN, LINKED, RINGS, SCALED, SUSPECT, SEATS)
    planner = Planner(size=3)  # small: entries are evicted and planned again
    for round in range(3):
        for n in range(40):
            attributes = {"model": "m", "tier": ("free", "pro", "")[n % 3], "seats": str(n % 4)}
            subject = Subject(
                f"a{n % 7}",
                f"o{n % 2}" if n % 5 else None,
                f"linked-{n % 3}" if n % 4 else None,
                attributes,
                cluster_exempt=n % 11 == 0,
                cluster_organizations=1 + n % 4,
                cluster_accounts=1 + n % 6,
            )
            scope_ids = {scope: subject.scope_id(scope) for scope in Scope}
            cost = estimate(100 * (n % 3), 1_000 * (round + n % 2))
            args = (subject.attributes, scope_ids, cost, None)
            counts = (subject.cluster_organizations, subject.cluster_accounts)
            expected = plan(policies, *args, *counts)
            assert list(planner.plan(policies, subject, cost)) == expected


def test_the_planner_starts_afresh_for_another_policy_set() -> None:
    planner = Planner()
    ring = Subject("a", "o1", "linked-1", {"model": "m"}, cluster_organizations=3)
    first = planner.plan(POLICIES, ring, estimate(1, 1))
    other = planner.plan(policy_set(OWN), ring, estimate(1, 1))
    assert [p.policy.name for p in first] == ["own", "linked", "rings"]
    assert [p.policy.name for p in other] == ["own"]
