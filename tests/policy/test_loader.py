from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from gateway.errors import PolicyError
from gateway.policy.check import check_paths
from gateway.policy.keys import hash_api_key
from gateway.policy.loader import load_policy_set, policy_files
from gateway.policy.model import Limit, Metric, Mode, OnStorageError, Scope, Unit

ACCOUNT = """\
version: 1
policies:
  - name: per-account
    scope: account
    limits:
      requests: 60/minute
      tokens: [200k/minute, 5M/day]
      concurrent: 8
    overrides:
      acct-vip: {tokens: [2M/minute, 100M/day]}
      acct-suspended: {requests: 0/minute}
"""

IDENTITY = """\
version: 1
identity:
  account_header: X-User-Id
  organization_header: ""
  attribute_headers: {tier: x-account-tier}
  trusted_sources: [10.0.0.0/8]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy_set(path)
    return caught.value.problems


def test_a_file_compiles(tmp_path: Path) -> None:
    policy_set = load_policy_set(write(tmp_path / "p.yaml", ACCOUNT))
    (policy,) = policy_set.policies
    assert policy.name == "per-account"
    assert policy.scope is Scope.ACCOUNT
    assert policy.mode is Mode.ENFORCE
    assert policy.on_storage_error is OnStorageError.OPEN
    assert policy.limits == (
        Limit(Metric.REQUESTS, 60, Unit.MINUTE),
        Limit(Metric.TOKENS, 200_000, Unit.MINUTE),
        Limit(Metric.TOKENS, 5_000_000, Unit.DAY),
        Limit(Metric.CONCURRENT, 8, None),
    )
    assert policy_set.sources == (str(tmp_path / "p.yaml"),)
    assert policy_set.identity.account_header == "x-account-id"
    assert len(policy_set.version) == 12


def test_an_override_replaces_only_the_metrics_it_names(tmp_path: Path) -> None:
    (policy,) = load_policy_set(write(tmp_path / "p.yaml", ACCOUNT)).policies
    vip = policy.limits_for("acct-vip")
    assert [limit.text for limit in vip if limit.metric is Metric.TOKENS] == [
        "2000000/minute",
        "100000000/day",
    ]
    assert Limit(Metric.REQUESTS, 60, Unit.MINUTE) in vip
    assert Limit(Metric.CONCURRENT, 8, None) in vip
    suspended = policy.limits_for("acct-suspended")
    assert [limit.amount for limit in suspended if limit.metric is Metric.REQUESTS] == [0]
    assert policy.limits_for("anyone-else") == policy.limits


def test_a_folder_is_one_set(tmp_path: Path) -> None:
    write(tmp_path / "b-account.yaml", ACCOUNT)
    write(tmp_path / "a-identity.yml", IDENTITY)
    write(tmp_path / "c-tiers.yaml", TIERS)
    write(tmp_path / ".hidden.yaml", "not: [valid")
    write(tmp_path / "README.md", "not a policy")
    write(tmp_path / "nested" / "x.yaml", "not: [valid")
    policy_set = load_policy_set(tmp_path)
    assert [p.name for p in policy_set.policies] == ["per-account", "free"]
    assert [Path(s).name for s in policy_set.sources] == [
        "a-identity.yml",
        "b-account.yaml",
        "c-tiers.yaml",
    ]
    identity = policy_set.identity
    assert identity.account_header == "x-user-id"  # headers are compared lower-case
    assert identity.organization_header == ""  # "" means: no organization header
    assert dict(identity.attribute_headers) == {"tier": "x-account-tier"}
    assert identity.trusted_sources == (ipaddress.ip_network("10.0.0.0/8"),)
    assert policy_set.policies[1].match == (("tier", "free"), ("model", "claude-*"))


TIERS = """\
version: 1
policies:
  - name: free
    scope: account
    match: {tier: free, model: "claude-*"}
    mode: shadow
    limits: {output_tokens: 10k/minute, input_tokens: [1M/hour]}
"""


def test_a_configmap_mount_is_read_through_its_symlinks(tmp_path: Path) -> None:
    """Kubernetes: files live in ..<timestamp>/, ..data points there, each key links via it."""
    first = write(tmp_path / "..2026_06_01_00_00_00.1" / "policy.yaml", ACCOUNT).parent
    os.symlink(first.name, tmp_path / "..data")
    os.symlink("..data/policy.yaml", tmp_path / "policy.yaml")
    assert policy_files(tmp_path) == [tmp_path / "policy.yaml"]
    before = load_policy_set(tmp_path)
    assert [p.name for p in before.policies] == ["per-account"]

    # An update writes a new timestamped folder and swaps ..data atomically.
    second = write(
        tmp_path / "..2026_06_02_00_00_00.2" / "policy.yaml",
        ACCOUNT.replace("60/minute", "30/minute"),
    ).parent
    os.symlink(second.name, tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    after = load_policy_set(tmp_path)
    assert after.version != before.version
    assert Limit(Metric.REQUESTS, 30, Unit.MINUTE) in after.policies[0].limits


def test_the_version_follows_names_and_bytes_only(tmp_path: Path) -> None:
    one = load_policy_set(write(tmp_path / "a" / "p.yaml", ACCOUNT)).version
    assert load_policy_set(write(tmp_path / "b" / "p.yaml", ACCOUNT)).version == one
    assert load_policy_set(write(tmp_path / "c" / "q.yaml", ACCOUNT)).version != one
    assert load_policy_set(write(tmp_path / "d" / "p.yaml", ACCOUNT + "# note\n")).version != one


def test_api_keys_are_loaded_from_the_registry(tmp_path: Path) -> None:
    digest = hash_api_key("sk-test-1")
    registry = write(
        tmp_path / "keys" / "registry.yaml",
        f"keys:\n  - key_sha256: {digest.upper()}\n    account: acct-1\n"
        "    organization: org-1\n    attributes: {tier: free}\n",
    )
    policy = write(
        tmp_path / "p.yaml",
        "version: 1\nidentity:\n  organization_header: null\n"
        "  api_keys: {file: keys/registry.yaml}\n"
        "policies:\n  - name: org\n    scope: organization\n    match: {tier: free}\n"
        "    limits: {tokens: 1M/day}\n",
    )
    policy_set = load_policy_set(policy)
    entry = policy_set.identity.api_keys[digest]  # stored lower-case
    assert (entry.account, entry.organization, dict(entry.attributes)) == (
        "acct-1",
        "org-1",
        {"tier": "free"},
    )
    assert policy_set.identity.api_keys_file == str(registry)
    assert policy_set.sources == (str(policy), str(registry))
    registry.write_text(registry.read_text().replace("acct-1", "acct-2"))
    assert load_policy_set(policy).version != policy_set.version


def test_a_repeated_key_is_reported_where_it_repeats(tmp_path: Path) -> None:
    digest = hash_api_key("k")
    write(tmp_path / "keys.yaml", f"keys:\n- {{key_sha256: {digest}, account: a}}\n" * 1
          + f"- {{key_sha256: {digest}, account: b}}\n")  # fmt: skip
    policy = write(tmp_path / "p.yaml", "version: 1\nidentity: {api_keys: {file: keys.yaml}}\n")
    assert problems(policy) == [
        f"{tmp_path}/keys.yaml:3:16: keys[1].key_sha256: the same key is already listed at line 2"
    ]


def test_clusters_compile(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """\
version: 1
identity: {attribute_headers: {verified: x-verified}}
policies:
  - {name: linked, scope: cluster, limits: {tokens: 50M/day}}
clusters:
  links: {ring-7: [acct-1, acct-2]}
  link_by:
    - header: X-Device-Id
    - client_ip: {ipv4_prefix: 24}
      max_accounts: 200
  exempt: {organizations: [org-1], attribute: {verified: "true"}}
""",
    )
    clusters = load_policy_set(path).clusters
    assert dict(clusters.links) == {"ring-7": ("acct-1", "acct-2")}
    device, address = clusters.link_by
    assert (device.header, device.max_accounts) == ("x-device-id", None)
    assert (address.ipv4_prefix, address.ipv6_prefix, address.max_accounts) == (24, 64, 200)
    assert clusters.disclose is False
    assert clusters.exempt_organizations == ("org-1",)
    assert clusters.exempt_attribute == ("verified", "true")


def test_min_organizations_compiles_and_defaults_to_every_cluster(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """\
version: 1
policies:
  - {name: rings, scope: cluster, min_organizations: 3, limits: {output_tokens: 20k/day}}
  - {name: linked, scope: cluster, limits: {tokens: 50M/day}}
  - {name: own, scope: account, limits: {tokens: 5M/day}}
clusters:
  link_by: [{header: x-card}]
""",
    )
    rings, linked, own = load_policy_set(path).policies
    assert (rings.min_organizations, linked.min_organizations, own.min_organizations) == (3, 1, 1)


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """\
version: 1
policies:
  - name: a
    scope: account
    limits: &base {requests: 60/minute}
  - name: b
    scope: organization
    limits:
      <<: *base
      tokens: 5M/day
      concurent: 3
""",
    )
    # A merged key has no position of its own; the typo still gets its own line.
    assert problems(path) == [
        f"{path}:11:7: policies[1].limits.concurent: unknown key 'concurent' "
        "(did you mean 'concurrent'?)"
    ]
    path.write_text(path.read_text().replace("      concurent: 3\n", ""))
    assert len(load_policy_set(path).policies[1].limits) == 2


def test_every_problem_of_every_file_is_listed_in_order(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "version: 1\npolicies:\n  - {name: x, scope: nope, limits: {}}\n")
    write(tmp_path / "b.yaml", "version: 3\n")
    assert problems(tmp_path) == [
        f'{tmp_path}/a.yaml:3:22: policies[0].scope: "nope" is not allowed; '
        "use 'account', 'organization' or 'cluster'",
        f"{tmp_path}/a.yaml:3:28: policies[0].limits: no limits; give at least one of "
        "requests, tokens, input_tokens, output_tokens or concurrent",
        f"{tmp_path}/b.yaml:1:10: version: 3 is not a supported version; write version: 1",
    ]


def test_missing_paths_and_empty_folders_are_errors(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path}/nope.yaml: no such file or folder"]
    assert problems(tmp_path) == [f"{tmp_path}: no *.yaml or *.yml files in this folder"]


def test_check_paths_summarizes_each_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "one.yaml", ACCOUNT)
    write(tmp_path / "set" / "a.yaml", ACCOUNT)
    write(tmp_path / "set" / "b.yaml", TIERS.replace("tier: free, ", ""))
    version = load_policy_set("one.yaml").version
    ok, lines = check_paths(["one.yaml", "set"])
    assert ok
    assert lines[0] == f"one.yaml: ok, 1 policy (1 enforce, 0 shadow), version {version}"
    assert lines[1].startswith("set: ok, 2 policies (1 enforce, 1 shadow) from 2 files, version ")
    write(tmp_path / "bad.yaml", "version: 1\npolicies: {}\n")
    ok, lines = check_paths(["one.yaml", "bad.yaml"])
    assert not ok
    assert lines[1] == "bad.yaml:2:1: policies: expected a list, got a mapping"


def test_merge_keys_and_aliases_in_a_real_file_keep_working(tmp_path: Path) -> None:
    """What operators write to keep tiers alike: anchors, ``<<`` merges, shared overrides."""
    path = write(
        tmp_path / "p.yaml",
        """\
version: 1
identity: {attribute_headers: {tier: x-account-tier}}
policies:
  - &tier
    name: free
    scope: account
    match: {tier: free}
    on_storage_error: closed
    limits: &free
      requests: 20/minute
      tokens: [50k/minute, 1M/day]
    overrides:
      acct-1: &vip {tokens: [2M/minute, 100M/day]}
      acct-2: *vip
  - <<: *tier
    name: pro
    match: {tier: pro}
    limits:
      <<: *free
      tokens: [2M/minute, 100M/day]
""",
    )
    free, pro = load_policy_set(path).policies
    assert (pro.scope, pro.on_storage_error, pro.match) == (
        Scope.ACCOUNT,
        OnStorageError.CLOSED,
        (("tier", "pro"),),
    )
    assert Limit(Metric.REQUESTS, 20, Unit.MINUTE) in pro.limits
    assert Limit(Metric.TOKENS, 100_000_000, Unit.DAY) in pro.limits
    assert Limit(Metric.TOKENS, 1_000_000, Unit.DAY) not in pro.limits
    assert free.limits_for("acct-2") == pro.limits_for("acct-1") == free.limits_for("acct-1")


def test_trust_any_source_lets_an_operator_trust_every_address(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        "version: 1\nidentity:\n  trusted_sources: [0.0.0.0/0, '::/0']\n  trust_any_source: true\n",
    )
    assert load_policy_set(path).identity.trusted_sources == (
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("::/0"),
    )
    path.write_text(path.read_text().replace("true", "false"))
    assert len(problems(path)) == 2


def test_narrow_enough_networks_need_no_trust_any_source(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        "version: 1\nidentity:\n"
        "  trusted_sources: [10.0.0.0/8, '2001::/16', '::ffff:10.0.0.0/104', 192.0.2.7]\n",
    )
    assert len(load_policy_set(path).identity.trusted_sources) == 4


def test_one_header_may_be_an_attribute_and_a_link_signal(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """\
version: 1
identity:
  account_header: x-user-id
  attribute_headers: {device: x-device-id}
policies:
  - {name: linked, scope: cluster, limits: {tokens: 50M/day}}
clusters:
  link_by: [{header: x-device-id}, {header: x-account-id}]
""",
    )
    policy_set = load_policy_set(path)
    assert dict(policy_set.identity.attribute_headers) == {"device": "x-device-id"}
    assert [signal.header for signal in policy_set.clusters.link_by] == [
        "x-device-id",
        "x-account-id",  # the default account header, but the account header is x-user-id here
    ]
