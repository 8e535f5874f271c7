"""The files the deployment examples run pass the same check `gateway serve` applies."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.loader import load_policy_set

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "deploy").rglob("*.yaml")), ids=str)
def test_deploy_policies_load(path: Path) -> None:
    policy_set = load_policy_set(path)
    assert policy_set.policies
    assert len(policy_set.identity.trusted_sources) > 2
