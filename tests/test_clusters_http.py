"""A cluster-scope refusal through the real HTTP path: undisclosed, it says nothing of links."""

from __future__ import annotations

import json

import httpx
import pytest
import redis.asyncio

from gateway.app import create_app
from gateway.policy.model import ClusterConfig, LinkSignal, Metric, Scope, Unit
from gateway.settings import Settings
from tests.budget.helpers import Clock, limit, policy
from tests.clusterkit import policies
from tests.servers import running
from tests.upstreams import Script, ScriptedUpstream

FINGERPRINT = LinkSignal(header="x-payment-fingerprint")
BODY = {"model": "claude-test", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
ANSWER = (
    b'{"id":"msg_1","type":"message","role":"assistant","model":"claude-test","content":[],'
    b'"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":3}}'
)
RING = policy("fraud-ring-7", limit(Metric.REQUESTS, 1, Unit.DAY), scope=Scope.CLUSTER)
ACCOUNT = policy("per-account", limit(Metric.REQUESTS, 100, Unit.DAY))


@pytest.mark.parametrize("disclose", [False, True])
async def test_a_cluster_refusal_says_nothing_of_links_unless_disclosed(
    redis_url: str, redis_client: redis.asyncio.Redis, disclose: bool
) -> None:
    upstream = ScriptedUpstream()
    upstream.script = Script(headers=[(b"content-type", b"application/json")], chunks=[ANSWER])
    config = ClusterConfig(link_by=(FINGERPRINT,), disclose=disclose)
    async with running(upstream) as upstream_url:
        settings = Settings(upstream=upstream_url, storage=redis_url, upstream_timeout=5.0)
        app = create_app(settings, policies=policies(ACCOUNT, RING, clusters=config), clock=Clock())
        async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
            card = {"x-payment-fingerprint": "4111-card"}
            first = await client.post(
                "/v1/messages", json=BODY, headers={"x-account-id": "acct-1", **card}
            )
            assert first.status_code == 200
            second = await client.post(
                "/v1/messages", json=BODY, headers={"x-account-id": "acct-2", **card}
            )
    assert second.status_code == 429
    message = json.loads(second.content)["error"]["message"]
    shown = (message + " " + " ".join(f"{k}: {v}" for k, v in second.headers.items())).lower()
    leaks = ["cluster", "link", "fraud-ring-7", "acct-1", "linked-", "4111"]
    if disclose:
        assert "for this cluster" in message and "fraud-ring-7" in message
        return
    assert message.startswith("Rate limit exceeded; retry after ")
    assert not [word for word in leaks if word in shown], shown
    # No counter at all: the account's own remaining would show that it still had room.
    assert not [name for name in second.headers if "ratelimit" in name], second.headers
    assert "retry-after" in second.headers


async def test_undisclosed_account_and_cluster_refusals_are_indistinguishable(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    """Each account may send one request a day, and so may the linked cluster: acct-2's
    refusal comes from the cluster (its own day is untouched), acct-3's from its account."""
    upstream = ScriptedUpstream()
    upstream.script = Script(headers=[(b"content-type", b"application/json")], chunks=[ANSWER])
    one_a_day = policy("per-account", limit(Metric.REQUESTS, 1, Unit.DAY))
    config = ClusterConfig(link_by=(FINGERPRINT,), disclose=False)
    async with running(upstream) as upstream_url:
        settings = Settings(upstream=upstream_url, storage=redis_url, upstream_timeout=5.0)
        app = create_app(
            settings, policies=policies(one_a_day, RING, clusters=config), clock=Clock()
        )
        async with running(app) as url, httpx.AsyncClient(base_url=url) as client:

            async def post(account: str, card: str) -> httpx.Response:
                headers = {"x-account-id": account, "x-payment-fingerprint": card}
                return await client.post("/v1/messages", json=BODY, headers=headers)

            assert (await post("acct-1", "card-a")).status_code == 200
            by_cluster = await post("acct-2", "card-a")
            assert (await post("acct-3", "card-b")).status_code == 200
            by_account = await post("acct-3", "card-b")
    assert len(upstream.seen) == 2
    for response in (by_cluster, by_account):
        assert response.status_code == 429
    assert by_cluster.content == by_account.content
    assert sorted(by_cluster.headers.keys()) == sorted(by_account.headers.keys())
    assert by_cluster.headers["retry-after"] == by_account.headers["retry-after"]
