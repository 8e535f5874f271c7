"""The official Anthropic and OpenAI SDKs through the gateway: every shipped route they
call still serves, streamed or not, and a spent budget is the SDK's own RateLimitError.

The SDKs build their request targets their own way (query strings, headers, paths), so
this is the proof that the gate refuses tricks and not real clients.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import openai
import pytest

from gateway.app import create_app
from gateway.mock_upstream import MockConfig, create_mock_app
from gateway.policy.loader import load_policy_set
from gateway.settings import Settings
from tests.servers import running

IDENTITY = {"x-account-id": "acct-sdk"}


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[str]:
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """
            version: 1
            policies:
              - name: per-account
                scope: account
                match: {model: "*"}
                limits: {requests: 1000/day, tokens: 10M/day}
              - name: blocked-model
                scope: account
                match: {model: "mock-blocked"}
                limits: {requests: 0/day}
            """
        )
    )
    config = MockConfig(output_tokens=12, token_delay_s=0)
    async with running(create_mock_app(config)) as upstream:
        app = create_app(Settings(upstream=upstream), policies=load_policy_set(path))
        async with running(app) as url:
            yield url


def anthropic_client(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=url, api_key="sk-test", default_headers=IDENTITY, max_retries=0
    )


def openai_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="sk-test", default_headers=IDENTITY, max_retries=0
    )


MESSAGES: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Hello"}]


async def test_anthropic_sdk_messages_tokens_batches_and_models(gateway: str) -> None:
    async with anthropic_client(gateway) as client:
        message = await client.messages.create(
            model="claude-test", max_tokens=20, messages=MESSAGES
        )
        async with client.messages.stream(
            model="claude-test", max_tokens=20, messages=MESSAGES
        ) as stream:
            streamed = await stream.get_final_message()
        counted = await client.messages.count_tokens(model="claude-test", messages=MESSAGES)
        batch = await client.messages.batches.create(
            requests=[
                {
                    "custom_id": "a",
                    "params": {"model": "claude-test", "max_tokens": 5, "messages": MESSAGES},
                }
            ]
        )
        again = await client.messages.batches.retrieve(batch.id)
        models = await client.models.list()
    assert message.usage.output_tokens > 0
    assert streamed.usage.output_tokens > 0
    assert counted.input_tokens > 0
    assert again.id == batch.id
    assert models.data


async def test_openai_sdk_chat_responses_completions_embeddings_and_models(
    gateway: str,
) -> None:
    async with openai_client(gateway) as client:
        chat = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "Hello"}]
        )
        chunks = [
            chunk
            async for chunk in await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "Hello"}], stream=True
            )
        ]
        response = await client.responses.create(model="gpt-test", input="Hello")
        events = [
            event.type
            async for event in await client.responses.create(
                model="gpt-test", input="Hello", stream=True
            )
        ]
        completion = await client.completions.create(model="gpt-test", prompt="Hello")
        embedding = await client.embeddings.create(model="emb-test", input=["a", "b"])
        models = await client.models.list()
    assert chat.usage is not None and chat.usage.completion_tokens > 0
    assert chunks and all(chunk.usage is None for chunk in chunks)  # ours was removed
    assert response.usage is not None and response.usage.output_tokens > 0
    assert events[-1] == "response.completed"
    assert completion.choices[0].text
    assert len(embedding.data) == 2
    assert models.data


async def test_a_refusal_is_each_sdks_own_rate_limit_error(gateway: str) -> None:
    async with anthropic_client(gateway) as client:
        with pytest.raises(anthropic.RateLimitError):
            await client.messages.create(model="mock-blocked", max_tokens=5, messages=MESSAGES)
    async with openai_client(gateway) as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(
                model="mock-blocked", messages=[{"role": "user", "content": "Hello"}]
            )
