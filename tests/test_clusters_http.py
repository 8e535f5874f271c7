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
    # The headers show the account's own limit, untouched by the linked account's spend.
    assert second.headers["anthropic-ratelimit-requests-remaining"] == "100"
    assert second.headers["anthropic-ratelimit-requests-limit"] == "100"
    assert "retry-after" in second.headers
