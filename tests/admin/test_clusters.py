"""Linking and unlinking by hand through the admin API, on the memory and the Redis store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import redis.asyncio

from gateway.policy.loader import load_policy_set
from gateway.policy.model import Metric, PolicySet, Scope, Unit
from gateway.settings import Settings
from tests.admin.conftest import AUTH, TOKEN, Gateway, in_process, small_policies
from tests.budget.helpers import limit, policy, policy_set

RING = policy_set(policy("ring", limit(Metric.TOKENS, 50_000, Unit.DAY), scope=Scope.CLUSTER))


@pytest.fixture(params=["memory", "redis"])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "memory":
        yield "memory://"
        return
    url: str = request.getfixturevalue("redis_url")
    client = redis.asyncio.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    yield url


def gateway(storage: str, policies: PolicySet = RING) -> AbstractAsyncContextManager[Gateway]:
    settings = Settings(upstream="http://127.0.0.1:9", storage=storage, admin_token=TOKEN)
    return in_process(settings, policies)


async def link(gw: Gateway, cluster: str, account: str) -> dict[str, object]:
    answer = await gw.admin.put(f"/v1/clusters/{cluster}/members/{account}", headers=AUTH)
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


async def test_the_last_member_of_a_named_cluster_can_be_unlinked(storage: str) -> None:
    async with gateway(storage) as gw:
        await link(gw, "ring-7", "acct-1")
        await link(gw, "ring-7", "acct-2")
        for account in ("acct-2", "acct-1"):  # the last one answered 404 and stayed linked
            gone = await gw.admin.delete(f"/v1/clusters/ring-7/members/{account}", headers=AUTH)
            assert gone.status_code == 200, gone.text
            assert gone.json()["cluster"] == {"id": account, "size": 1, "members": [account]}
        account = (await gw.admin.get("/v1/accounts/acct-1", headers=AUTH)).json()
        assert account["cluster"]["id"] == "acct-1" and not account["linked"]
        assert (await gw.admin.get("/v1/clusters/ring-7", headers=AUTH)).status_code == 404
        again = await gw.admin.delete("/v1/clusters/ring-7/members/acct-1", headers=AUTH)
        assert again.status_code == 404


async def test_an_account_alone_in_a_named_cluster_is_linked(storage: str) -> None:
    async with gateway(storage) as gw:
        await link(gw, "ring-7", "acct-1")
        account = (await gw.admin.get("/v1/accounts/acct-1", headers=AUTH)).json()
        assert account["cluster"]["id"] == "ring-7" and account["linked"]
        gone = await gw.admin.delete("/v1/clusters/ring-7/members/acct-1", headers=AUTH)
        assert gone.status_code == 200, gone.text
        assert (await gw.admin.get("/v1/clusters/ring-7", headers=AUTH)).status_code == 404


async def test_a_link_no_cluster_policy_counts_says_so() -> None:
    async with gateway("memory://", small_policies()) as gw:
        (warning,) = (await link(gw, "ring-7", "acct-1"))["warnings"]  # type: ignore[misc]
        assert "No cluster policy is running" in str(warning)
    async with gateway("memory://") as gw:
        assert (await link(gw, "ring-7", "acct-1"))["warnings"] == []


def test_a_cluster_policy_may_rely_on_admin_links_alone(tmp_path: Path) -> None:
    path = tmp_path / "admin-links.yaml"
    path.write_text(
        "version: 1\n"
        "policies:\n"
        "  - {name: ring, scope: cluster, limits: {tokens: 50M/day}}\n"
        "clusters: {}\n"
    )
    loaded = load_policy_set(path)
    assert [(p.name, p.scope) for p in loaded.policies] == [("ring", Scope.CLUSTER)]
    assert not loaded.clusters.links and not loaded.clusters.link_by
