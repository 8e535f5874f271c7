"""Two gateway processes on one Redis: live overrides, hot reload, SIGHUP, auth, audit, metrics.

The processes (and a mock upstream) start once for the module. Every wait polls up to a
deadline the feature promises (an override within 1 s, a file change within 2 s) and never
asserts how fast an answer came.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.prometheus import value
from tests.servers import free_port

TOKEN = "replica-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
BIN = Path(sys.executable).parent


def account_file(requests: str) -> str:
    return (
        "version: 1\n"
        "policies:\n"
        "  - name: acct-daily\n"
        "    scope: account\n"
        "    limits:\n"
        f"      requests: {requests}\n"
    )


def org_file(requests: str) -> str:
    return (
        account_file(requests)
        .replace("acct-daily", "org-daily")
        .replace("scope: account", "scope: organization")
    )


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    proxy: httpx.Client
    admin: httpx.Client

    def send(self, account: str, organization: str = "org-x") -> int:
        headers = {"x-account-id": account, "x-organization-id": organization}
        body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        return self.proxy.post("/v1/messages", json=body, headers=headers).status_code

    def usage(self, scope: str, scope_id: str) -> dict[tuple[str, str], dict[str, Any]]:
        body = self.admin.get(f"/v1/usage/{scope}/{scope_id}", headers=AUTH).json()
        return {(row["policy"], row["metric"]): row for row in body["limits"]}

    def metric(self, name: str, **labels: str) -> float:
        return value(self.admin.get("/metrics").text, name, **labels)


@dataclass
class Cluster:
    a: Replica
    b: Replica
    folder: Path

    @property
    def both(self) -> tuple[Replica, Replica]:
        return self.a, self.b


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.02)


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _configmap(folder: Path, name: str, stamp: str, text: str) -> None:
    """Write ``name`` the way Kubernetes does: a stamped folder behind a ``..data`` link."""
    real = folder / f"..{stamp}"
    real.mkdir()
    (real / name).write_text(text)
    link = folder / "..data_tmp"
    link.symlink_to(real.name)
    os.replace(link, folder / "..data")
    if not (folder / name).is_symlink():
        (folder / name).symlink_to(f"..data/{name}")


@pytest.fixture(scope="module")
def cluster(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    root = tmp_path_factory.mktemp("replicas")
    folder = root / "policies"
    folder.mkdir()
    (folder / "a.yaml").write_text(account_file("1000/day"))
    _configmap(folder, "b.yaml", "2026_01", org_file("500/day"))
    env = {**os.environ, "GATEWAY_ADMIN_TOKEN": TOKEN}
    env.pop("GATEWAY_ADMIN_TOKENS_FILE", None)
    mock_port = free_port()
    processes = [
        _start(
            [str(BIN / "gateway"), "mock-upstream", "--port", str(mock_port)],
            root / "mock.log",
            env,
        )
    ]
    replicas = []
    for name in ("a", "b"):
        port, admin_port = free_port(), free_port()
        args = [str(BIN / "gateway"), "serve", "--upstream", f"http://127.0.0.1:{mock_port}"]
        args += ["--policies", str(folder), "--storage", redis_url]
        args += ["--port", str(port), "--admin-port", str(admin_port)]
        process = _start(args, root / f"{name}.log", env)
        processes.append(process)
        replicas.append(
            Replica(
                process,
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5),
                httpx.Client(base_url=f"http://127.0.0.1:{admin_port}", timeout=5),
            )
        )
    try:
        for replica in replicas:
            url = str(replica.admin.base_url).rstrip("/") + "/readyz"
            wait_for(lambda u=url: _ready(u), 30, f"{url} ready (logs in {root})")  # type: ignore[misc]
        wait_for(lambda: _ready(f"http://127.0.0.1:{mock_port}/mock/stats"), 30, "mock upstream")
        yield Cluster(replicas[0], replicas[1], folder)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)
        for replica in replicas:
            replica.proxy.close()
            replica.admin.close()


def test_an_override_reaches_the_other_replica_within_a_second_and_expires(
    cluster: Cluster,
) -> None:
    a, b = cluster.both
    assert b.send("acct-o1") == 200
    body = {"limits": {"requests": "0/minute"}, "ttl_seconds": 3, "reason": "incident 7"}
    put = a.admin.put("/v1/overrides/account/acct-o1", json=body, headers=AUTH)
    assert put.status_code == 200, put.text
    expires_at = put.json()["override"]["expires_at"]
    wait_for(
        lambda: (
            ("acct-daily", "requests") in b.usage("account", "acct-o1")
            and b.usage("account", "acct-o1")["acct-daily", "requests"]["limit"] == "0/minute"
        ),
        1.0,
        "replica b sees the override",
    )
    assert b.send("acct-o1") == 429
    assert b.send("acct-o2") == 200  # another account is untouched
    wait_for(lambda: time.time() > expires_at, 5, "the TTL passes")
    for replica in cluster.both:
        wait_for(
            lambda r=replica: (
                r.usage("account", "acct-o1")["acct-daily", "requests"]["limit"]  # type: ignore[misc]
                == "1000/day"
            ),
            1.0,
            "the override ends by itself",
        )
        assert replica.admin.get("/v1/overrides", headers=AUTH).json()["overrides"] == []
    assert b.send("acct-o1") == 200
    used = b.usage("account", "acct-o1")["acct-daily", "requests"]["used"]
    assert used == 2  # the refused request debited nothing; the first survived the override


def test_edit_replace_and_configmap_swap_apply_without_resetting_spend(cluster: Cluster) -> None:
    for _ in range(3):
        assert cluster.a.send("acct-p1", "org-p1") == 200

    def limits_become(scope: str, scope_id: str, policy: str, text: str) -> None:
        for replica in cluster.both:
            wait_for(
                lambda r=replica: r.usage(scope, scope_id)[policy, "requests"]["limit"] == text,  # type: ignore[misc]
                2.0,
                f"{policy} becomes {text}",
            )
            assert replica.usage(scope, scope_id)[policy, "requests"]["used"] == 3

    (cluster.folder / "a.yaml").write_text(account_file("2000/day"))  # an edit in place
    limits_become("account", "acct-p1", "acct-daily", "2000/day")
    temporary = cluster.folder / ".a.yaml.tmp"
    temporary.write_text(account_file("3000/day"))
    os.replace(temporary, cluster.folder / "a.yaml")  # an atomic replace
    limits_become("account", "acct-p1", "acct-daily", "3000/day")
    _configmap(cluster.folder, "b.yaml", "2026_02", org_file("700/day"))  # a ConfigMap update
    limits_become("organization", "org-p1", "org-daily", "700/day")
    versions = {r.admin.get("/readyz").json()["policy_version"] for r in cluster.both}
    assert len(versions) == 1


def test_a_broken_file_keeps_the_last_good_set(cluster: Cluster) -> None:
    a, b = cluster.both
    good = a.admin.get("/v1/policies", headers=AUTH).json()["version"]
    original = (cluster.folder / "a.yaml").read_text()
    (cluster.folder / "a.yaml").write_text(account_file("5 M/day"))
    try:
        response = a.admin.post("/v1/policies/reload", headers=AUTH)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["version"] == good and good in error["message"]
        assert any(re.search(r"a\.yaml:6:17: .*not a limit", line) for line in error["problems"])
        wait_for(
            lambda: (
                b.admin.get("/v1/policies", headers=AUTH).json()["last_reload"]["outcome"]
                == "failed"
            ),
            2.0,
            "replica b's watcher tries the broken file",
        )
        assert b.admin.get("/v1/policies", headers=AUTH).json()["version"] == good
        assert b.send("acct-p2") == 200
    finally:
        (cluster.folder / "a.yaml").write_text(original + "# fixed\n")
    for replica in cluster.both:
        wait_for(
            lambda r=replica: r.admin.get("/readyz").json()["policy_version"] != good,  # type: ignore[misc]
            2.0,
            "the fixed file loads",
        )


def test_sighup_reloads(cluster: Cluster) -> None:
    b = cluster.b
    before = b.metric("gateway_policy_reloads_total", result="unchanged")
    os.kill(b.process.pid, signal.SIGHUP)
    wait_for(
        lambda: b.metric("gateway_policy_reloads_total", result="unchanged") > before,
        2.0,
        "SIGHUP reloads",
    )
    assert b.process.poll() is None and b.admin.get("/healthz").status_code == 200


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer nope"}])
def test_a_wrong_or_missing_token_changes_nothing(
    cluster: Cluster, headers: dict[str, str]
) -> None:
    a, b = cluster.both
    audit_before = b.admin.get("/v1/audit", headers=AUTH).json()["entries"]
    body = {"limits": {"requests": "0/minute"}}
    response = a.admin.put("/v1/overrides/account/acct-t1", json=body, headers=headers)
    assert response.status_code == 401
    assert a.admin.post("/v1/policies/reload", headers=headers).status_code == 401
    time.sleep(0.2)  # time for a change to show, were there one
    assert b.admin.get("/v1/overrides", headers=AUTH).json()["overrides"] == []
    assert b.admin.get("/v1/audit", headers=AUTH).json()["entries"] == audit_before
    assert b.send("acct-t1") == 200


def test_the_audit_holds_every_change(cluster: Cluster) -> None:
    a, b = cluster.both
    body = {"limits": {"tokens": "5M/day"}, "reason": "trial"}
    assert a.admin.put("/v1/overrides/organization/org-a1", json=body, headers=AUTH).is_success
    assert a.admin.delete("/v1/overrides/organization/org-a1?reason=over", headers=AUTH).is_success
    entries = b.admin.get("/v1/audit?limit=100", headers=AUTH).json()["entries"]
    seen = [(e["action"], e["actor"], e["target"]) for e in entries]
    assert seen[:2] == [
        ("override.clear", "admin", "organization/org-a1"),
        ("override.set", "admin", "organization/org-a1"),
    ]
    assert ("override.set", "admin", "account/acct-o1") in seen
    reloads = [e for e in entries if e["action"] == "policies.reload"]
    assert {e["actor"] for e in reloads} == {"admin", "files"}
    failed = [e for e in reloads if e["actor"] == "admin"]
    assert (
        failed[0]["after"]["outcome"] == "failed"
        and "a.yaml:6:17" in failed[0]["after"]["problems"]
    )
    assert entries[0]["reason"] == "over" and entries[0]["before"]["reason"] == "trial"


def test_metrics_count_requests_refusals_and_reloads(cluster: Cluster) -> None:
    a = cluster.a
    exchanges = a.metric("gateway_exchanges_total")
    refused = a.metric("gateway_decisions_total", result="refused")
    body = {"limits": {"requests": "1/day"}, "ttl_seconds": 60}
    assert a.admin.put("/v1/overrides/account/acct-m1", json=body, headers=AUTH).is_success
    assert [a.send("acct-m1") for _ in range(3)] == [200, 429, 429]
    assert a.metric("gateway_exchanges_total") == exchanges + 3
    assert a.metric("gateway_exchanges_total", outcome="refused") >= 2
    assert a.metric("gateway_decisions_total", result="refused") == refused + 2
    assert a.metric("gateway_policy_reloads_total", result="ok") >= 4
    assert a.metric("gateway_policy_reloads_total", result="failed") >= 1
    assert a.metric("gateway_active_overrides") == 1
