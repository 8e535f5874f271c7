"""Budgets through the real HTTP path: refusals, their headers, retry-after, identity."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.mock_upstream import MockConfig, create_mock_app
from gateway.policy.keys import hash_api_key
from gateway.policy.loader import load_policy_set
from gateway.policy.model import PolicySet, Scope
from gateway.settings import Settings
from tests.servers import free_port, running


class FakeClock:
    def __init__(self, now: float = 1_790_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policies(tmp_path: Path, text: str, name: str = "p.yaml") -> PolicySet:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_policy_set(path)


def anthropic(max_tokens: int = 50, content: str = "Hello there.") -> dict[str, object]:
    return {
        "model": "claude-test",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}],
    }


def openai(max_tokens: int = 50) -> dict[str, object]:
    return {
        "model": "gpt-test",
        "max_completion_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Hello there."}],
    }


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async with running(create_mock_app(MockConfig(output_tokens=20, token_delay_s=0))) as url:
        yield url


async def test_sequential_requests_stop_at_the_token_budget_and_never_pass_it(
    tmp_path: Path, upstream: str
) -> None:
    policy_set = policies(
        tmp_path,
        """
        version: 1
        policies:
          - name: daily-tokens
            scope: account
            limits: {tokens: 1000/day}
        """,
    )
    app = create_app(Settings(upstream=upstream), policies=policy_set, clock=FakeClock())
    used = 0
    admitted = 0
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(100):
            response = await client.post(
                "/v1/messages", json=anthropic(), headers={"x-account-id": "acct-1"}
            )
            if response.status_code == 429:
                break
            assert response.status_code == 200
            usage = response.json()["usage"]
            used += usage["input_tokens"] + usage["output_tokens"]
            admitted += 1
        else:
            pytest.fail("the budget never refused")
        # The reservation (input estimate + max_tokens) must fit in what is left, so the
        # real spend can never cross the limit.
        assert 0 < used <= 1000
        assert admitted >= 1000 // (20 + 50 + 20)  # settles refunded the unused max_tokens
        remaining = int(response.headers["anthropic-ratelimit-tokens-remaining"])
        assert remaining == 1000 - used


async def test_anthropic_429_shape_and_headers(tmp_path: Path, upstream: str) -> None:
    policy_set = policies(
        tmp_path,
        """
        version: 1
        policies:
          - name: per-minute
            scope: account
            limits: {requests: 2/minute, tokens: 100k/day}
        """,
    )
    app = create_app(Settings(upstream=upstream), policies=policy_set, clock=FakeClock())
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        headers = {"x-account-id": "acct-1"}
        first = await client.post("/v1/messages", json=anthropic(), headers=headers)
        assert first.headers["anthropic-ratelimit-requests-limit"] == "2"
        assert first.headers["anthropic-ratelimit-requests-remaining"] == "1"
        assert first.headers["anthropic-ratelimit-tokens-limit"] == "100000"
        assert "ratelimit-policy" in first.headers and "ratelimit" in first.headers
        await client.post("/v1/messages", json=anthropic(), headers=headers)
        refused = await client.post("/v1/messages", json=anthropic(), headers=headers)
    assert refused.status_code == 429
    body = refused.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["message"] == (
        "Rate limit exceeded: policy 'per-minute' allows 2 requests per minute for this "
        "account; retry after 30 s."
    )
    # Two requests per minute drain one every 30 s: the third fits 30 s after the second.
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"


async def test_openai_429_shape_and_headers(tmp_path: Path, upstream: str) -> None:
    policy_set = policies(
        tmp_path,
        """
        version: 1
        policies:
          - name: org-tokens
            scope: organization
            limits: {tokens: 150/hour}
        """,
    )
    app = create_app(Settings(upstream=upstream), policies=policy_set, clock=FakeClock())
    headers = {"x-account-id": "acct-1", "x-organization-id": "org-1"}
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        first = await client.post("/v1/chat/completions", json=openai(), headers=headers)
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-tokens"] == "150"
        refused = await client.post("/v1/chat/completions", json=openai(120), headers=headers)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert (
        "policy 'org-tokens' allows 150 tokens per hour for this organization" in (error["message"])
    )
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining-tokens"].isdigit()
    reset = refused.headers["x-ratelimit-reset-tokens"]
    assert reset[-1] == "s" and reset[0].isdigit()


async def test_waiting_retry_after_then_retrying_is_admitted(tmp_path: Path, upstream: str) -> None:
    policy_set = policies(
        tmp_path,
        """
        version: 1
        policies:
          - name: burst
            scope: account
            limits: {tokens: 300/minute}
        """,
    )
    clock = FakeClock()
    app = create_app(Settings(upstream=upstream), policies=policy_set, clock=clock)
    headers = {"x-account-id": "acct-1"}
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        while (
            response := await client.post("/v1/messages", json=anthropic(100), headers=headers)
        ).status_code == 200:
            pass
        assert response.status_code == 429
        wait = int(response.headers["retry-after"])
        clock.now += wait - 1
        early = await client.post("/v1/messages", json=anthropic(100), headers=headers)
        assert early.status_code == 429
        clock.now += 1
        retried = await client.post("/v1/messages", json=anthropic(100), headers=headers)
        assert retried.status_code == 200


async def test_a_request_that_can_never_fit_says_so_without_retry_after(
    tmp_path: Path, upstream: str
) -> None:
    policy_set = policies(
        tmp_path,
        """
        version: 1
        policies:
          - name: small
            scope: account
            limits: {output_tokens: 1k/minute}
        """,
    )
    app = create_app(Settings(upstream=upstream), policies=policy_set, clock=FakeClock())
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post(
            "/v1/messages", json=anthropic(max_tokens=4096), headers={"x-account-id": "a"}
        )
    assert response.status_code == 429
    assert "retry-after" not in response.headers
    assert response.json()["error"]["message"] == (
        "This request needs 4,096 output tokens but policy 'small' allows 1,000 output tokens "
        "per minute for this account; lower max_tokens."
    )


async def test_two_app_instances_sharing_redis_admit_exactly_the_budget(
    tmp_path: Path, upstream: str, redis_url: str, redis_client: object
) -> None:
    policy_set = policies(
        tmp_path,
        """
        version: 1
        policies:
          - name: hundred
            scope: organization
            limits: {requests: 100/day}
        """,
    )
    settings = Settings(upstream=upstream, storage=redis_url)
    one, two = create_app(settings, policies=policy_set), create_app(settings, policies=policy_set)
    limits = httpx.Limits(max_connections=100)
    async with (
        running(one) as url_one,
        running(two) as url_two,
        httpx.AsyncClient(limits=limits, timeout=30) as client,
    ):

        async def call(i: int) -> int:
            base = url_one if i % 2 else url_two
            response = await client.post(
                f"{base}/v1/messages",
                json=anthropic(),
                headers={"x-account-id": f"acct-{i % 7}", "x-organization-id": "org-1"},
            )
            return response.status_code

        statuses = await asyncio.gather(*(call(i) for i in range(200)))
    assert statuses.count(200) == 100
    assert statuses.count(429) == 100


async def test_identity_headers_from_an_untrusted_peer_are_refused(
    tmp_path: Path, upstream: str
) -> None:
    policy_set = policies(
        tmp_path,
        """
        version: 1
        identity:
          trusted_sources: [10.0.0.0/8]
        policies: []
        """,
    )
    app = create_app(Settings(upstream=upstream), policies=policy_set)
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        spoofed = await client.post("/v1/messages", json=anthropic(), headers={"x-account-id": "a"})
        bare = await client.post("/v1/chat/completions", json=openai())
    assert spoofed.status_code == 401
    assert spoofed.json()["error"] == {
        "type": "authentication_error",
        "message": "Identity headers are accepted only from the trusted edge; send this request "
        "through it.",
    }
    assert bare.status_code == 401
    assert bare.json()["error"]["message"] == (
        "No account: send the request through the trusted edge, which sets x-account-id."
    )


async def test_api_keys_identify_callers_and_failed_attempts_are_throttled(
    tmp_path: Path, upstream: str
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "registry.yaml").write_text(
        "keys:\n"
        f"  - key_sha256: {hash_api_key('sk-good')}\n"
        "    account: acct-k\n"
        "    organization: org-k\n"
    )
    policy_set = policies(
        tmp_path,
        """
        version: 1
        identity:
          api_keys: {file: keys/registry.yaml}
        policies:
          - name: per-account
            scope: account
            limits: {requests: 1/minute}
        """,
    )
    app = create_app(Settings(upstream=upstream), policies=policy_set, clock=FakeClock())
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        good = await client.post("/v1/messages", json=anthropic(), headers={"x-api-key": "sk-good"})
        again = await client.post(
            "/v1/messages", json=anthropic(), headers={"authorization": "Bearer sk-good"}
        )
        # Two different keys: the upstream might serve the one the gateway did not meter.
        split = await client.post(
            "/v1/messages",
            json=anthropic(),
            headers={"x-api-key": "sk-good", "authorization": "Bearer sk-other"},
        )
        guesser = {"x-forwarded-for": "198.51.100.7"}  # as the edge says
        statuses = [
            (
                await client.post(
                    "/v1/messages", json=anthropic(), headers={"x-api-key": f"bad{i}", **guesser}
                )
            ).status_code
            for i in range(31)
        ]
        neighbour = await client.post(
            "/v1/messages",
            json=anthropic(),
            headers={"x-api-key": "bad", "x-forwarded-for": "198.51.100.8"},
        )
        # An edge that names no caller: its callers are not one address to lock out.
        edge_only = [
            (
                await client.post("/v1/messages", json=anthropic(), headers={"x-api-key": "bad"})
            ).status_code
            for _ in range(31)
        ]
    assert good.status_code == 200
    assert split.status_code == 401
    assert "different keys" in split.json()["error"]["message"]
    assert again.status_code == 429  # same key, same account: its 1/minute is spent
    assert statuses[:30] == [401] * 30
    assert statuses[30] == 429  # the address is throttled after 30 failures a minute
    assert neighbour.status_code == 401  # another caller behind the same edge is not
    assert edge_only == [401] * 31


async def test_storage_down_under_a_closed_policy_is_503_with_retry_after(
    tmp_path: Path, upstream: str
) -> None:
    policy_set = policies(
        tmp_path,
        """
        version: 1
        policies:
          - name: strict
            scope: account
            on_storage_error: closed
            limits: {requests: 10/minute}
        """,
    )
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app(Settings(upstream=upstream, storage=dead), policies=policy_set)
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post(
            "/v1/messages", json=anthropic(), headers={"x-account-id": "acct-1"}
        )
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "overloaded_error"
    assert body["error"]["message"] == (
        "The rate-limit store is unavailable and policy 'strict' admits nothing without it; "
        "retry in 1 s."
    )


async def test_storage_down_under_an_undisclosed_cluster_policy_names_no_policy(
    tmp_path: Path, upstream: str
) -> None:
    policy_set = policies(
        tmp_path,
        """
        version: 1
        policies:
          - name: ring-budget
            scope: cluster
            on_storage_error: closed
            limits: {requests: 10/minute}
        clusters:
          link_by: [{header: x-payment-fingerprint}]
        """,
    )
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app(Settings(upstream=upstream, storage=dead), policies=policy_set)
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post(
            "/v1/messages", json=anthropic(), headers={"x-account-id": "acct-1"}
        )
    assert response.status_code == 503
    assert response.json()["error"]["message"] == (
        "The rate-limit store is unavailable; retry in 1 s."
    )


async def test_storage_down_under_an_open_policy_admits(tmp_path: Path, upstream: str) -> None:
    policy_set = policies(
        tmp_path,
        """
        version: 1
        policies:
          - name: lenient
            scope: account
            limits: {requests: 1/minute}
        """,
    )
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(Settings(upstream=upstream, storage=dead), policies=policy_set)
    headers = {"x-account-id": "acct-1"}
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        first = await client.post("/v1/messages", json=anthropic(), headers=headers)
        second = await client.post("/v1/messages", json=anthropic(), headers=headers)
    # Open: the same limits are enforced per replica in memory while Redis is away.
    assert first.status_code == 200
    assert second.status_code == 429


@pytest.mark.parametrize("n", [1, 2])
async def test_uncapped_concurrent_requests_cannot_push_real_spend_past_the_budget(
    tmp_path: Path, n: int
) -> None:
    """A model that would write 6,000 tokens, asked with no cap: the gateway writes its
    default cap (4,096) into each forwarded request and reserves it n times, so three at
    once cannot all fit a 10,000-token day, and what they really spend stays within it."""
    policy_set = policies(
        tmp_path,
        """
        version: 1
        policies:
          - name: daily
            scope: account
            limits: {tokens: 10k/day}
        """,
    )
    config = MockConfig(output_tokens=6000, token_delay_s=0, latency_s=0.3)
    uncapped = {"model": "gpt-test", "n": n, "messages": [{"role": "user", "content": "Go."}]}
    async with running(create_mock_app(config)) as upstream:
        app = create_app(Settings(upstream=upstream), policies=policy_set, clock=FakeClock())
        async with running(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            answers = await asyncio.gather(
                *[
                    client.post(
                        "/v1/chat/completions", json=uncapped, headers={"x-account-id": "a"}
                    )
                    for _ in range(3)
                ]
            )
            statuses = await app.state.engine.usage(Scope.ACCOUNT, "a")
    admitted = [answer for answer in answers if answer.status_code == 200]
    assert len(admitted) == (2 if n == 1 else 1)
    assert all(answer.status_code in (200, 429) for answer in answers)
    spent = sum(answer.json()["usage"]["total_tokens"] for answer in admitted)
    assert all(answer.json()["usage"]["completion_tokens"] <= 4096 for answer in admitted)
    assert spent <= 10_000
    assert statuses[0].remaining == 10_000 - spent  # settled to exactly what was used
