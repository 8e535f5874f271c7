"""The shipped policies and the examples in docs/policies.md load, so the docs cannot rot."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from gateway.policy.keys import read_registry
from gateway.policy.loader import load_policy_set, policy_files
from gateway.policy.model import Action, Mode, Scope

ROOT = Path(__file__).parents[2]
POLICIES = ROOT / "policies"
DOCS = ROOT / "docs" / "policies.md"
SHIPPED = policy_files(POLICIES) + policy_files(POLICIES / "examples")
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: str(path.relative_to(ROOT)))
def test_shipped_policy_loads(path: Path) -> None:
    assert load_policy_set(path).policies


def test_the_policies_folder_is_one_set() -> None:
    names = [policy.name for policy in load_policy_set(POLICIES).policies]
    assert "account-default" in names
    assert "linked-cluster" in names


def test_distillation_defense_has_its_cluster_budgets() -> None:
    policy_set = load_policy_set(POLICIES / "distillation-defense.yaml")
    by_name = {p.name: p for p in policy_set.policies}
    linked = by_name["linked-cluster"]
    assert (linked.scope, linked.scale_by, linked.scale_exponent) == (
        Scope.CLUSTER,
        "cluster_accounts",
        0.5,
    )
    suspect = by_name["suspect-behaviour"]
    assert suspect.scope is Scope.CLUSTER and suspect.scale_by is None  # flat: size buys nothing
    assert suspect.match == (("cluster_behaviour", "suspect"),)
    assert (suspect.action, suspect.min_output_tokens) == (Action.CAP, 256)
    assert [limit.text for limit in suspect.limits] == ["1000/day"]
    assert by_name["new-account-trial"].mode is Mode.SHADOW
    assert policy_set.clusters.link_by
    assert policy_set.clusters.disclose is False


def test_the_example_registry_loads() -> None:
    result = read_registry(POLICIES / "examples" / "keys" / "api-keys.yaml")
    assert not isinstance(result, list)
    assert len(result[1]) == 2


@pytest.mark.parametrize(
    "path", [*SHIPPED, POLICIES / "examples" / "keys" / "api-keys.yaml"], ids=lambda path: path.name
)
def test_docs_show_the_file_as_it_is(path: Path) -> None:
    assert path.read_text() in BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_docs_example_loads(index: int, tmp_path: Path) -> None:
    block = BLOCKS[index]
    if block.startswith("keys:") or "\nkeys:" in block:
        path = tmp_path / "registry.yaml"
        path.write_text(block)
        assert not isinstance(read_registry(path), list)
        return
    shutil.copytree(POLICIES / "examples" / "keys", tmp_path / "keys")
    path = tmp_path / "example.yaml"
    path.write_text(block)
    assert load_policy_set(path).policies


README_BLOCKS = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_readme_example_loads(index: int, tmp_path: Path) -> None:
    path = tmp_path / "readme.yaml"
    path.write_text(README_BLOCKS[index])
    assert load_policy_set(path).policies
