"""A stream that runs past the output its admission reserved is cut there, well formed for
its API, its upstream connection closed, and charged what was delivered: real gateway and
real mock upstream on free ports, an upstream that ignores the cap it is sent."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from gateway.apis import OPENAI
from gateway.apis.sse import EventSplitter, event_data
from gateway.app import create_app
from gateway.decision_log import read_log
from gateway.mock_upstream import MockConfig, create_mock_app
from gateway.policy.loader import load_policy_set
from gateway.policy.model import Scope
from gateway.settings import Settings
from tests.servers import running

ACCOUNT = {"x-account-id": "acct-1"}
LIMIT = 100_000
CAP = 50
PROMPT = [{"role": "user", "content": "Write at length."}]


def events(raw: bytes) -> list[tuple[str | None, Any]]:
    """Every SSE event as (event name, parsed data); a piece that is not a whole event fails."""
    splitter = EventSplitter()
    pieces = splitter.feed(raw)
    assert splitter.flush() == [], "the stream ended inside an event"
    parsed = []
    for piece in pieces:
        data = event_data(piece)
        assert data is not None
        name = next(
            (line[6:].strip().decode() for line in piece.splitlines() if line[:6] == b"event:"),
            None,
        )
        parsed.append((name, data.decode() if data == b"[DONE]" else json.loads(data)))
    return parsed


async def settled(app: Starlette, expected_spend: int) -> int:
    """The account's token spend once the exchange has settled to ``expected_spend``."""
    spent = -1
    for _ in range(200):
        statuses = await app.state.engine.usage(Scope.ACCOUNT, "acct-1")
        spent = LIMIT - next(s.remaining for s in statuses if s.limit.text == f"{LIMIT}/day")
        if spent == expected_spend:
            break
        await asyncio.sleep(0.02)
    return spent


async def cancelled_upstream(client: httpx.AsyncClient, mock: str) -> dict[str, Any]:
    """The mock's ledger entry once it saw the gateway close the connection."""
    for _ in range(200):
        ledger = (await client.get(f"{mock}/mock/ledger")).json()
        if ledger and ledger[-1]["outcome"] != "active":
            return dict(ledger[-1])
        await asyncio.sleep(0.02)
    pytest.fail("the upstream request never ended")


@pytest.fixture
async def mock() -> AsyncIterator[str]:
    # 400 tokens at 5 ms each: two seconds, so the gateway's cut comes long before the end.
    config = MockConfig(output_tokens=400, token_delay_s=0.005, ignore_cap=True)
    async with running(create_mock_app(config)) as url:
        yield url


def gateway_app(tmp_path: Path, upstream: str) -> Starlette:
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            version: 1
            policies:
              - name: daily
                scope: account
                limits: {{tokens: {LIMIT}/day}}
            """
        )
    )
    settings = Settings(upstream=upstream, decision_log=str(tmp_path / "decisions.jsonl"))
    return create_app(settings, policies=load_policy_set(path))


async def stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> bytes:
    async with client.stream("POST", url, json=body, headers=ACCOUNT) as response:
        assert response.status_code == 200
        return b"".join([chunk async for chunk in response.aiter_raw()])


async def test_an_anthropic_stream_past_its_cap_ends_with_max_tokens_and_is_charged_what_came(
    tmp_path: Path, mock: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = gateway_app(tmp_path, mock)
    body = {"model": "claude-test", "max_tokens": CAP, "stream": True, "messages": PROMPT}
    with caplog.at_level(logging.WARNING, logger="gateway.proxy"):
        async with running(app) as url, httpx.AsyncClient() as client:
            raw = await stream(client, f"{url}/v1/messages", body)
            upstream = await cancelled_upstream(client, mock)
            parsed = events(raw)
            text = "".join(
                data["delta"]["text"] for name, data in parsed if name == "content_block_delta"
            )
            deltas = sum(1 for name, _ in parsed if name == "content_block_delta")
            input_tokens = parsed[0][1]["message"]["usage"]["input_tokens"]
            output = math.ceil(len(text.encode()) / 3)
            spent = await settled(app, input_tokens + output)
    assert [name for name, _ in parsed[-3:]] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = parsed[-2][1]
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"] == {"output_tokens": output}
    # One token a delta: the gateway delivered exactly the cap, and not one delta more.
    assert deltas == CAP
    # The upstream was cut off mid-answer: it had been asked for the cap, wrote past it.
    assert upstream["outcome"] == "cancelled"
    assert CAP < upstream["output_tokens"] < 400
    assert spent == input_tokens + output  # charged what was delivered, not what was made
    line = read_log(tmp_path / "decisions.jsonl")[-1]
    assert line["outcome"] == "cut_at_cap"
    assert line["usage"]["output_tokens"] == output
    assert any("stream cut at its output cap" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("include_usage", [True, False])
async def test_a_chat_stream_past_its_cap_ends_with_length_and_is_charged_what_came(
    tmp_path: Path, mock: str, include_usage: bool
) -> None:
    app = gateway_app(tmp_path, mock)
    body: dict[str, Any] = {
        "model": "gpt-test",
        "max_completion_tokens": CAP,
        "stream": True,
        "messages": PROMPT,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    async with running(app) as url, httpx.AsyncClient() as client:
        raw = await stream(client, f"{url}/v1/chat/completions", body)
        upstream = await cancelled_upstream(client, mock)
        parsed = [data for _, data in events(raw)]
        contents = [
            chunk["choices"][0]["delta"].get("content") or ""
            for chunk in parsed
            if isinstance(chunk, dict) and chunk["choices"]
        ]
        output = math.ceil(len("".join(contents).encode()) / 3)
        input_tokens = OPENAI.estimate(body, 4096).input_tokens  # no usage came: the estimate
        spent = await settled(app, input_tokens + output)
    assert parsed[-1] == "[DONE]"
    final = parsed[-3] if include_usage else parsed[-2]
    assert final["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    ]
    assert final["id"] == parsed[0]["id"] and final["object"] == "chat.completion.chunk"
    if include_usage:
        assert parsed[-2]["choices"] == []
        assert parsed[-2]["usage"] == {
            "prompt_tokens": input_tokens,
            "completion_tokens": output,
            "total_tokens": input_tokens + output,
        }
    else:
        assert not any(isinstance(chunk, dict) and chunk.get("usage") for chunk in parsed)
    assert sum(1 for content in contents if content) == CAP
    assert upstream["outcome"] == "cancelled"
    assert CAP < upstream["output_tokens"] < 400
    assert spent == input_tokens + output
    assert read_log(tmp_path / "decisions.jsonl")[-1]["outcome"] == "cut_at_cap"


async def test_an_upstream_that_honours_its_cap_is_never_cut(tmp_path: Path) -> None:
    config = MockConfig(output_tokens=400, token_delay_s=0)
    async with running(create_mock_app(config)) as mock:
        app = gateway_app(tmp_path, mock)
        body = {"model": "claude-test", "max_tokens": CAP, "stream": True, "messages": PROMPT}
        async with running(app) as url, httpx.AsyncClient() as client:
            raw = await stream(client, f"{url}/v1/messages", body)
            upstream = await cancelled_upstream(client, mock)
    parsed = events(raw)
    assert parsed[-2][1]["usage"]["output_tokens"] == CAP  # the upstream's own count
    assert upstream["outcome"] == "completed"
    assert read_log(tmp_path / "decisions.jsonl")[-1]["outcome"] == "complete"
