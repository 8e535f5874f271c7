"""Which policies a request plans: ``min_organizations`` against the subject's cluster."""

from __future__ import annotations

from dataclasses import replace

from gateway.budget.buckets import plan, plan_usage
from gateway.budget.decision import Subject
from gateway.policy.model import Metric, Scope, Unit
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
