from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from gateway.apis import ANTHROPIC, OPENAI
from gateway.metering import Usage
from gateway.mock_upstream import MockConfig, create_mock_app

PROMPT = "Tell me a story about a lighthouse keeper."
ANTHROPIC_BODY = {
    "model": "claude-x",
    "max_tokens": 1000,
    "messages": [{"role": "user", "content": PROMPT}],
}
OPENAI_BODY = {"model": "gpt-x", "messages": [{"role": "user", "content": PROMPT}]}
INPUT = math.ceil(len(PROMPT + "user") / 4)  # the mock counts every string in the messages


def client_for(config: MockConfig) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_mock_app(config))
    return httpx.AsyncClient(transport=transport, base_url="http://mock")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(MockConfig(output_tokens=12, token_delay_s=0)) as client:
        yield client


def sse_data(body: bytes) -> list[Any]:
    lines = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    return [line.decode() if line == b"[DONE]" else json.loads(line) for line in lines]


async def test_anthropic_message(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages", json=ANTHROPIC_BODY)
    answer = response.json()
    assert (response.status_code, answer["type"], answer["stop_reason"]) == (
        200,
        "message",
        "end_turn",
    )
    assert len(answer["content"][0]["text"].split()) == 12
    assert ANTHROPIC.usage_from_json(response.content) == Usage(
        input_tokens=INPUT, output_tokens=12
    )


async def test_max_tokens_caps_the_output(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages", json={**ANTHROPIC_BODY, "max_tokens": 5})
    assert response.json()["stop_reason"] == "max_tokens"
    assert response.json()["usage"]["output_tokens"] == 5
    response = await client.post(
        "/v1/chat/completions", json={**OPENAI_BODY, "max_completion_tokens": 3}
    )
    assert response.json()["choices"][0]["finish_reason"] == "length"
    assert OPENAI.usage_from_json(response.content) == Usage(input_tokens=INPUT, output_tokens=3)


async def test_anthropic_stream(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages", json={**ANTHROPIC_BODY, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    kinds = [event["type"] for event in sse_data(response.content)]
    assert kinds == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 12,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    meter = ANTHROPIC.stream_meter(injected=False)
    meter.feed(response.content)
    assert meter.result() == (Usage(input_tokens=INPUT, output_tokens=12), True)


async def test_tokens_per_chunk() -> None:
    async with client_for(
        MockConfig(output_tokens=10, tokens_per_chunk=4, token_delay_s=0)
    ) as client:
        response = await client.post("/v1/messages", json={**ANTHROPIC_BODY, "stream": True})
    deltas = [
        e["delta"]["text"] for e in sse_data(response.content) if e["type"] == "content_block_delta"
    ]
    assert [len(delta.split()) for delta in deltas] == [4, 4, 2]


async def test_openai_completion(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=OPENAI_BODY)
    answer = response.json()
    assert (answer["object"], answer["choices"][0]["finish_reason"]) == ("chat.completion", "stop")
    assert answer["usage"]["total_tokens"] == INPUT + 12


async def test_openai_stream_sends_usage_only_when_asked(client: httpx.AsyncClient) -> None:
    plain = await client.post("/v1/chat/completions", json={**OPENAI_BODY, "stream": True})
    chunks = sse_data(plain.content)
    assert chunks[-1] == "[DONE]"
    assert all("usage" not in chunk for chunk in chunks[:-1])
    asked = {**OPENAI_BODY, "stream": True, "stream_options": {"include_usage": True}}
    response = await client.post("/v1/chat/completions", json=asked)
    chunks = sse_data(response.content)
    assert [chunk["usage"] for chunk in chunks[:-3]] == [None] * (len(chunks) - 3)
    assert chunks[-2]["choices"] == []
    meter = OPENAI.stream_meter(injected=False)
    meter.feed(response.content)
    assert meter.result() == (Usage(input_tokens=INPUT, output_tokens=12), True)


async def test_injected_status_uses_the_api_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/messages", json=ANTHROPIC_BODY, headers={"x-mock-status": "500"}
    )
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "api_error"
    response = await client.post(
        "/v1/chat/completions", json=OPENAI_BODY, headers={"x-mock-status": "429"}
    )
    assert (response.status_code, response.headers["retry-after"]) == (429, "1")
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


async def test_bad_mock_header(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/messages", json=ANTHROPIC_BODY, headers={"x-mock-latency": "soon"}
    )
    assert response.status_code == 400
    assert (
        response.json()["error"]["message"]
        == "x-mock-latency must be a non-negative number; got 'soon'."
    )


@pytest.mark.parametrize(("path", "shape"), [("/v1/models", "error"), ("/v1/messages/x", "type")])
async def test_unknown_paths_are_404_json(client: httpx.AsyncClient, path: str, shape: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert shape in response.json()


async def test_latency_header_delays_the_answer(client: httpx.AsyncClient) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.post("/v1/messages", json=ANTHROPIC_BODY, headers={"x-mock-latency": "0.2"})
    assert loop.time() - started >= 0.2


async def test_stats_count_and_reset(client: httpx.AsyncClient) -> None:
    await client.post("/v1/messages", json=ANTHROPIC_BODY)
    await client.post("/v1/chat/completions", json={**OPENAI_BODY, "stream": True})
    stats = (await client.get("/mock/stats")).json()
    assert stats == {"active": 0, "completed": 2, "cancelled": 0, "broken": 0}
    await client.post("/mock/reset")
    assert (await client.get("/mock/stats")).json()["completed"] == 0


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """The mock on a real uvicorn server and a free port: disconnects need a real socket."""
    app = create_mock_app(MockConfig(output_tokens=2000, token_delay_s=0.01))
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def stats_become(base: str, **expected: int) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(250):
            stats = (await client.get("/mock/stats")).json()
            if all(stats[key] == value for key, value in expected.items()):
                return
            await asyncio.sleep(0.02)
    assert stats == expected


async def test_a_client_leaving_a_stream_is_counted_as_cancelled(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as client:
        request = {**ANTHROPIC_BODY, "max_tokens": 5000, "stream": True}
        async with client.stream("POST", "/v1/messages", json=request) as response:
            async for _ in response.aiter_raw():
                await stats_become(server, active=1, cancelled=0)
                break
    await stats_become(server, active=0, completed=0, cancelled=1)


async def test_a_client_leaving_during_latency_is_counted_as_cancelled(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                "/v1/chat/completions", json=OPENAI_BODY, headers={"x-mock-latency": "30"}
            )
    await stats_become(server, active=0, completed=0, cancelled=1)


async def test_break_after_cuts_the_connection_mid_body(server: str) -> None:
    received = b""
    async with httpx.AsyncClient(base_url=server) as client:
        request = {**ANTHROPIC_BODY, "stream": True}
        headers = {"x-mock-break-after": "3"}
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream(
                "POST", "/v1/messages", json=request, headers=headers
            ) as response:
                async for chunk in response.aiter_raw():
                    received += chunk
    assert received.count(b"event: content_block_delta") == 3
    assert b"message_stop" not in received
    await stats_become(server, active=0, completed=0, broken=1)
