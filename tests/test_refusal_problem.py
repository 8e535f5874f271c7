"""A policy's ``problem`` on its refusals and caps, over HTTP in both APIs' shapes; and
refusals without one that still say nothing of links when undisclosed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.mock_upstream import MockConfig, create_mock_app
from gateway.settings import Settings
from tests.servers import running
from tests.test_admission import FakeClock, policies

TYPE = "https://example.com/problems/verify-account"
DETAIL = "Verify your account at example.com/verify to raise this limit."
PROBLEM = f"problem: {{type: '{TYPE}', detail: '{DETAIL}'}}"
ACCOUNT = {"x-account-id": "acct-1"}


def messages(model: str = "claude-test", max_tokens: int = 20) -> dict[str, object]:
    content = [{"role": "user", "content": "Hello."}]
    return {"model": model, "max_tokens": max_tokens, "messages": content}


def chat() -> dict[str, object]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": "Hello."}]}


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async with running(create_mock_app(MockConfig(output_tokens=10, token_delay_s=0))) as url:
        yield url


ONE_A_MINUTE = f"""
    version: 1
    policies:
      - name: unverified
        scope: account
        limits: {{requests: 1/minute}}
        {PROBLEM}
    """


async def test_an_anthropic_refusal_carries_the_problem_type_detail_and_help_link(
    tmp_path: Path, upstream: str
) -> None:
    app = create_app(Settings(upstream=upstream), policies=policies(tmp_path, ONE_A_MINUTE))
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.post("/v1/messages", json=messages(), headers=ACCOUNT)).is_success
        refused = await client.post("/v1/messages", json=messages(), headers=ACCOUNT)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["problem_type"] == TYPE
    assert error["message"] == (
        "Rate limit exceeded: policy 'unverified' allows 1 requests per minute for this "
        f"account; retry after 60 s. {DETAIL}"
    )
    assert refused.headers["link"] == f'<{TYPE}>; rel="help"'


async def test_an_openai_refusal_carries_the_problem_type_detail_and_help_link(
    tmp_path: Path, upstream: str
) -> None:
    app = create_app(Settings(upstream=upstream), policies=policies(tmp_path, ONE_A_MINUTE))
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post("/v1/chat/completions", json=chat(), headers=ACCOUNT)
        refused = await client.post("/v1/chat/completions", json=chat(), headers=ACCOUNT)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_exceeded", "rate_limit_exceeded")
    assert error["problem_type"] == TYPE
    assert error["message"].endswith(f"retry after 60 s. {DETAIL}")
    assert refused.headers["link"] == f'<{TYPE}>; rel="help"'


async def test_the_official_sdks_read_such_a_refusal_as_their_usual_rate_limit_error(
    tmp_path: Path, upstream: str
) -> None:
    app = create_app(Settings(upstream=upstream), policies=policies(tmp_path, ONE_A_MINUTE))
    async with running(app) as url:
        claude = anthropic.AsyncAnthropic(
            base_url=url, api_key="k", default_headers=ACCOUNT, max_retries=0
        )
        gpt = openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key="k", default_headers=ACCOUNT, max_retries=0
        )
        await claude.messages.create(
            model="claude-test", max_tokens=20, messages=[{"role": "user", "content": "Hi"}]
        )
        with pytest.raises(anthropic.RateLimitError) as claude_error:
            await claude.messages.create(
                model="claude-test", max_tokens=20, messages=[{"role": "user", "content": "Hi"}]
            )
        with pytest.raises(openai.RateLimitError) as gpt_error:
            await gpt.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "Hi"}]
            )
        await claude.close()
        await gpt.close()
    assert DETAIL in str(claude_error.value) and DETAIL in str(gpt_error.value)


async def test_undisclosed_a_problem_is_the_authors_words_and_names_no_scope(
    tmp_path: Path, upstream: str
) -> None:
    policy_set = policies(
        tmp_path,
        f"""
        version: 1
        policies:
          - name: ring-budget
            scope: cluster
            limits: {{requests: 1/minute}}
            {PROBLEM}
        clusters:
          link_by: [{{header: x-device-id}}]
          disclose: false
        """,
    )
    app = create_app(Settings(upstream=upstream), policies=policy_set, clock=FakeClock())
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post("/v1/messages", json=messages(), headers=ACCOUNT)
        refused = await client.post("/v1/messages", json=messages(), headers=ACCOUNT)
    error = refused.json()["error"]
    assert error["message"] == f"Rate limit exceeded; retry after 60 s. {DETAIL}"
    assert error["problem_type"] == TYPE
    assert "cluster" not in refused.text and "ring-budget" not in refused.text
    assert not any(name.startswith("anthropic-ratelimit") for name in refused.headers)


async def test_undisclosed_two_cluster_policies_without_a_problem_read_identically(
    tmp_path: Path, upstream: str
) -> None:
    policy_set = policies(
        tmp_path,
        """
        version: 1
        policies:
          - name: ring-a
            scope: cluster
            match: {model: model-a}
            limits: {requests: 1/minute}
          - name: linked-b
            scope: cluster
            match: {model: model-b}
            limits: {requests: 1/minute}
        clusters:
          link_by: [{header: x-device-id}]
          disclose: false
        """,
    )
    app = create_app(Settings(upstream=upstream), policies=policy_set, clock=FakeClock())
    refusals = []
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        for model in ("model-a", "model-b"):
            await client.post("/v1/messages", json=messages(model), headers=ACCOUNT)
            refusals.append(
                await client.post("/v1/messages", json=messages(model), headers=ACCOUNT)
            )
    a, b = refusals
    assert a.status_code == b.status_code == 429
    assert a.content == b.content
    assert "problem_type" not in a.text
    assert "link" not in a.headers
    # Alike but for the request id, which is each request's own and says nothing of policy.
    assert a.headers["x-request-id"] != b.headers["x-request-id"]
    del a.headers["x-request-id"], b.headers["x-request-id"]
    assert sorted(a.headers.items()) == sorted(b.headers.items())


async def test_a_cap_by_a_policy_with_a_problem_links_to_it(tmp_path: Path, upstream: str) -> None:
    policy_set = policies(
        tmp_path,
        f"""
        version: 1
        policies:
          - name: unverified
            scope: account
            action: cap
            min_output_tokens: 16
            limits: {{tokens: 1000/day}}
            {PROBLEM}
        """,
    )
    app = create_app(Settings(upstream=upstream), policies=policy_set, clock=FakeClock())
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        capped = await client.post("/v1/messages", json=messages(max_tokens=5000), headers=ACCOUNT)
        plain = await client.post("/v1/messages", json=messages(max_tokens=20), headers=ACCOUNT)
    assert capped.status_code == 200 and "x-gateway-output-capped" in capped.headers
    assert capped.headers["link"] == f'<{TYPE}>; rel="help"'
    assert plain.status_code == 200 and "link" not in plain.headers
