"""A client that leaves mid-stream is charged what it was sent: the input, and the output
already streamed (estimated from its text), through real servers, on memory and Redis."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio

from gateway.admission import Admission
from gateway.apis.base import tokens_for_bytes
from gateway.app import create_app
from gateway.metering import Outcome, UsageRecord
from gateway.policy.model import Metric, Scope, Unit
from gateway.settings import Settings
from tests.budget.helpers import Clock, limit, policy, policy_set
from tests.servers import running
from tests.upstreams import Script, ScriptedUpstream

ACCOUNT = "acct-1"
CAP = 1000  # max_tokens: what the reservation holds for output
TEXT = ["Hello there, this is streamed text. " * 3, "And more of it, piece by piece. " * 3]
STREAMED_OUTPUT = tokens_for_bytes(sum(len(t.encode()) for t in TEXT))
POLICIES = policy_set(
    policy(
        "spend",
        limit(Metric.INPUT_TOKENS, 100_000, Unit.DAY),
        limit(Metric.OUTPUT_TOKENS, 100_000, Unit.DAY),
        limit(Metric.TOKENS, 100_000, Unit.DAY),
        limit(Metric.REQUESTS, 100, Unit.DAY),
        limit(Metric.CONCURRENT, 5),
    )
)


class Settled:
    """A usage hook after the gateway's own: once it has run, the settle has too."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []
        self.arrived = asyncio.Event()

    async def __call__(self, record: UsageRecord, admission: Admission | None) -> None:
        self.records.append(record)
        self.arrived.set()

    async def one(self) -> UsageRecord:
        await asyncio.wait_for(self.arrived.wait(), 10)
        [record] = self.records
        return record


def sse(event: str | None, data: dict[str, Any]) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


@dataclass(frozen=True)
class Api:
    path: str
    body: dict[str, Any]
    events: list[bytes]  # what the upstream sends before it stalls; the client reads all
    input_tokens: int | None  # as the upstream reported it; None: the gateway's estimate


ANTHROPIC = Api(
    "/v1/messages",
    {
        "model": "claude-test",
        "max_tokens": CAP,
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me a story."}],
    },
    [
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-test",
                    "content": [],
                    "usage": {"input_tokens": 12, "output_tokens": 1},
                },
            },
        ),
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        ),
        *(
            sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
            for text in TEXT
        ),
    ],
    input_tokens=12,
)
OPENAI = Api(
    "/v1/chat/completions",
    {
        "model": "gpt-test",
        "max_completion_tokens": CAP,
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me a story."}],
    },
    [
        sse(
            None,
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}],
            },
        )
        for text in TEXT
    ],
    input_tokens=None,  # OpenAI reports usage only in the last chunk, never sent here
)


@pytest.fixture(params=["memory", "redis"])
def storage(
    request: pytest.FixtureRequest, redis_url: str, redis_client: redis.asyncio.Redis
) -> str:
    """The gateway's budget store: memory://, or the flushed test Redis."""
    return "memory://" if request.param == "memory" else redis_url


@pytest.mark.parametrize("api", [ANTHROPIC, OPENAI], ids=["anthropic", "openai"])
async def test_a_client_leaving_mid_stream_is_charged_what_was_streamed(
    storage: str, api: Api
) -> None:
    upstream = ScriptedUpstream()
    never = asyncio.Event()

    async def stall_after_the_script(i: int) -> None:
        if i >= len(api.events):
            await never.wait()

    upstream.script = Script(
        headers=[(b"content-type", b"text/event-stream")],
        chunks=[*api.events, b"never sent"],
        gate=stall_after_the_script,
    )
    settled = Settled()
    async with running(upstream) as upstream_url:
        settings = Settings(upstream=upstream_url, storage=storage, upstream_timeout=10.0)
        app = create_app(settings, policies=POLICIES, clock=Clock(), hooks=[settled])
        async with running(app) as url:
            async with (
                httpx.AsyncClient() as client,
                client.stream(
                    "POST", url + api.path, json=api.body, headers={"x-account-id": ACCOUNT}
                ) as response,
            ):
                assert response.status_code == 200
                got = b""
                async for chunk in response.aiter_raw():
                    got += chunk
                    if got.count(b"\n\n") >= len(api.events):
                        break  # leaving the block closes the connection mid-stream
            await asyncio.wait_for(upstream.abandoned_event.wait(), 10)
            record = await settled.one()
            statuses = await app.state.engine.usage(Scope.ACCOUNT, ACCOUNT)
    assert record.outcome is Outcome.CLIENT_GONE and upstream.completed == 0
    assert record.estimate is not None
    charged_input = api.input_tokens or record.estimate.input_tokens
    assert charged_input > 0
    spent = {s.limit.metric: s.limit.amount - s.remaining for s in statuses}
    assert spent == {
        Metric.INPUT_TOKENS: charged_input,
        Metric.OUTPUT_TOKENS: STREAMED_OUTPUT,  # not 0, not the whole cap
        Metric.TOKENS: charged_input + STREAMED_OUTPUT,
        Metric.REQUESTS: 1,
        Metric.CONCURRENT: 0,  # the slot came back
    }
    assert 0 < STREAMED_OUTPUT < CAP
