"""The subject the cluster layer hands on: every field kept but its cluster's."""

from __future__ import annotations

from dataclasses import fields

from gateway.budget.decision import Subject

CLUSTER_FIELDS = {"cluster", "cluster_organizations", "cluster_accounts"}


def test_in_cluster_keeps_every_other_field() -> None:
    subject = Subject("a", "o", "old", {"model": "m", "tier": "pro"}, True, 5, 9)
    moved = subject.in_cluster("linked-3", 2, 4)
    assert (moved.cluster, moved.cluster_organizations, moved.cluster_accounts) == (
        "linked-3",
        2,
        4,
    )
    # A field added to Subject later must be carried over too, or this fails.
    for field in fields(Subject):
        if field.name not in CLUSTER_FIELDS:
            assert getattr(moved, field.name) == getattr(subject, field.name), field.name
    assert {f.name for f in fields(Subject)} - CLUSTER_FIELDS == {
        "account",
        "organization",
        "attributes",
        "cluster_exempt",
    }
