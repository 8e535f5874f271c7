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
from gateway.mock.log import RequestLog
from gateway.mock_upstream import MockConfig, create_mock_app

PROMPT = "Tell me a story about a lighthouse keeper."
ANTHROPIC_BODY = {
    "model": "claude-x",
    "max_tokens": 1000,
    "messages": [{"role": "user", "content": PROMPT}],
}
OPENAI_BODY = {"model": "gpt-x", "messages": [{"role": "user", "content": PROMPT}]}
INPUT = math.ceil(len(PROMPT + "user") / 4)  # the mock counts every string in the messages
PROMPT_INPUT = math.ceil(len(PROMPT) / 4)
RESPONSES_BODY = {"model": "gpt-x", "input": PROMPT}
COMPLETE_BODY = {
    "model": "claude-2.1",
    "prompt": f"\n\nHuman: {PROMPT}\n\nAssistant:",
    "max_tokens_to_sample": 100,
}
BATCH_BODY = {
    "requests": [
        {"custom_id": "first", "params": ANTHROPIC_BODY},
        {"custom_id": "second", "params": {**ANTHROPIC_BODY, "max_tokens": 3}},
    ]
}


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


def sse_events(body: bytes) -> list[tuple[str, Any]]:
    """(event, data) for each SSE event that names itself."""
    events = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


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


@pytest.mark.parametrize(("path", "shape"), [("/v1/nothing", "error"), ("/v1/messages/x", "type")])
async def test_unknown_paths_are_404_json(client: httpx.AsyncClient, path: str, shape: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert shape in response.json()


async def test_a_wrong_method_is_405_in_the_api_shape(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/models")
    assert response.status_code == 405
    assert sorted(response.headers["allow"].split(", ")) == ["GET", "HEAD"]  # a set: any order
    assert response.json()["error"]["message"] == (
        "Method DELETE is not allowed on /v1/models in the mock API."
    )
    assert (await client.get("/v1/complete")).json()["type"] == "error"


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
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="none", http="h11"
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


# The request log


def logged(method: str, target: str, accounts: list[str], orgs: list[str]) -> dict[str, Any]:
    return {"method": method, "target": target, "x-account-id": accounts, "x-organization-id": orgs}


async def test_the_log_records_each_request_oldest_first(client: httpx.AsyncClient) -> None:
    identity = {"x-account-id": "acct-1", "x-organization-id": "org-1"}
    await client.post("/v1/messages?beta=true", json=ANTHROPIC_BODY, headers=identity)
    await client.get("/v1/nothing")
    await client.delete("/v1/models", headers=[("x-account-id", "a"), ("x-account-id", "b")])
    await client.get("/mock/stats")
    assert (await client.get("/mock/log")).json() == [
        logged("POST", "/v1/messages?beta=true", ["acct-1"], ["org-1"]),
        logged("GET", "/v1/nothing", [], []),
        logged("DELETE", "/v1/models", ["a", "b"], []),
    ]


async def test_reset_clears_the_log(client: httpx.AsyncClient) -> None:
    await client.get("/v1/models")
    await client.post("/mock/reset")
    assert (await client.get("/mock/log")).json() == []


def test_the_log_keeps_the_newest_requests() -> None:
    log = RequestLog(limit=2)
    for path in ("/a", "/b", "/c"):
        log.record({"method": "GET", "path": path, "raw_path": path.encode(), "headers": []})
    assert [entry.target for entry in log.entries()] == ["/b", "/c"]


async def send_raw(base: str, request: bytes) -> bytes:
    """``request`` as bytes on a socket: HTTP clients would normalise its target."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_the_log_keeps_a_raw_target_as_sent(server: str) -> None:
    target = b"/v1/models/a%2Fb#frag?q=%2F..%2f"
    head = b"GET " + target + b" HTTP/1.1\r\nHost: mock\r\nx-account-id: acct-1\r\n"
    answer = await send_raw(server, head + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404 ")
    async with httpx.AsyncClient(base_url=server) as client:
        log = (await client.get("/mock/log")).json()
    assert log == [logged("GET", target.decode(), ["acct-1"], [])]


# OpenAI Responses


async def test_response(client: httpx.AsyncClient) -> None:
    answer = (await client.post("/v1/responses", json=RESPONSES_BODY)).json()
    assert (answer["id"][:5], answer["object"], answer["status"]) == (
        "resp_",
        "response",
        "completed",
    )
    [message] = answer["output"]
    [text] = message["content"]
    assert (message["type"], message["role"], text["type"]) == (
        "message",
        "assistant",
        "output_text",
    )
    assert len(text["text"].split()) == 12
    assert answer["usage"] == {
        "input_tokens": PROMPT_INPUT,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": PROMPT_INPUT + 12,
    }
    assert (await client.get(f"/v1/responses/{answer['id']}")).json() == answer


async def test_max_output_tokens_caps_a_response(client: httpx.AsyncClient) -> None:
    body = {**RESPONSES_BODY, "max_output_tokens": 4}
    answer = (await client.post("/v1/responses", json=body)).json()
    assert len(answer["output"][0]["content"][0]["text"].split()) == 4
    assert answer["usage"]["output_tokens"] == 4


async def test_response_stream(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/responses", json={**RESPONSES_BODY, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    names = [name for name, _ in events]
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 12,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["type"] for _, data in events] == names
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert events[0][1]["response"]["usage"] is None
    final = events[-1][1]["response"]
    deltas = "".join(data["delta"] for name, data in events if name.endswith(".delta"))
    assert final["output"][0]["content"][0]["text"] == deltas
    assert (final["status"], final["usage"]["output_tokens"]) == ("completed", 12)


async def test_a_background_response_is_queued_then_completed(client: httpx.AsyncClient) -> None:
    body = {**RESPONSES_BODY, "background": True}
    answer = (await client.post("/v1/responses", json=body)).json()
    assert (answer["status"], answer["output"], answer["usage"]) == ("queued", [], None)
    stored = (await client.get(f"/v1/responses/{answer['id']}")).json()
    assert (stored["status"], stored["usage"]["output_tokens"]) == ("completed", 12)


async def test_a_response_id_the_mock_never_made(client: httpx.AsyncClient) -> None:
    answer = (await client.get("/v1/responses/resp_elsewhere")).json()
    assert (answer["id"], answer["status"]) == ("resp_elsewhere", "completed")
    items = (await client.get("/v1/responses/resp_elsewhere/input_items")).json()
    assert (items["object"], items["data"]) == ("list", [])


async def test_response_input_items_cancel_and_delete(client: httpx.AsyncClient) -> None:
    ident = (await client.post("/v1/responses", json=RESPONSES_BODY)).json()["id"]
    items = (await client.get(f"/v1/responses/{ident}/input_items")).json()["data"]
    assert [item["content"] for item in items] == [[{"type": "input_text", "text": PROMPT}]]
    cancelled = (await client.post(f"/v1/responses/{ident}/cancel")).json()
    assert (cancelled["id"], cancelled["status"]) == (ident, "cancelled")
    deleted = (await client.delete(f"/v1/responses/{ident}")).json()
    assert deleted == {"id": ident, "object": "response", "deleted": True}


# OpenAI legacy Completions


async def test_legacy_completion_writes_16_tokens_unless_told() -> None:
    async with client_for(MockConfig(output_tokens=40, token_delay_s=0)) as client:
        response = await client.post("/v1/completions", json={"model": "gpt-x", "prompt": PROMPT})
    answer = response.json()
    [choice] = answer["choices"]
    assert (answer["id"][:5], answer["object"]) == ("cmpl-", "text_completion")
    assert (choice["index"], choice["finish_reason"], len(choice["text"].split())) == (
        0,
        "length",
        16,
    )
    assert answer["usage"] == {
        "prompt_tokens": PROMPT_INPUT,
        "completion_tokens": 16,
        "total_tokens": PROMPT_INPUT + 16,
    }


async def test_legacy_completion_choices_per_prompt(client: httpx.AsyncClient) -> None:
    body = {"model": "gpt-x", "prompt": ["one", "two"], "n": 2, "max_tokens": 5}
    answer = (await client.post("/v1/completions", json=body)).json()
    assert [choice["index"] for choice in answer["choices"]] == [0, 1, 2, 3]
    assert {choice["finish_reason"] for choice in answer["choices"]} == {"length"}
    assert answer["usage"]["completion_tokens"] == 4 * 5


async def test_legacy_completion_stream(client: httpx.AsyncClient) -> None:
    body = {"model": "gpt-x", "prompt": PROMPT, "stream": True}
    plain = sse_data((await client.post("/v1/completions", json=body)).content)
    assert plain[-1] == "[DONE]"
    assert all("usage" not in chunk for chunk in plain[:-1])
    asked = {**body, "stream_options": {"include_usage": True}}
    chunks = sse_data((await client.post("/v1/completions", json=asked)).content)
    *texts, usage, done = chunks
    assert (done, usage["choices"], usage["usage"]["completion_tokens"]) == ("[DONE]", [], 12)
    assert {chunk["object"] for chunk in texts} == {"text_completion"}
    assert all(chunk["usage"] is None for chunk in texts)
    assert len("".join(chunk["choices"][0]["text"] for chunk in texts).split()) == 12
    assert [chunk["choices"][0]["finish_reason"] for chunk in texts][-2:] == [None, "stop"]


# OpenAI Embeddings


async def test_embeddings(client: httpx.AsyncClient) -> None:
    body = {"model": "embed-x", "input": ["first", "second"]}
    answer = (await client.post("/v1/embeddings", json=body)).json()
    assert (answer["object"], answer["model"]) == ("list", "embed-x")
    shapes = [(item["object"], item["index"], len(item["embedding"])) for item in answer["data"]]
    assert shapes == [("embedding", 0, 8), ("embedding", 1, 8)]
    assert answer["usage"] == {"prompt_tokens": 3, "total_tokens": 3}  # 11 bytes
    one = (await client.post("/v1/embeddings", json={**body, "input": "first"})).json()
    assert one["data"][0]["embedding"] == answer["data"][0]["embedding"]


# Anthropic legacy Text Completions


async def test_anthropic_legacy_completion(client: httpx.AsyncClient) -> None:
    answer = (await client.post("/v1/complete", json=COMPLETE_BODY)).json()
    assert (answer["type"], answer["stop_reason"], answer["model"]) == (
        "completion",
        "stop_sequence",
        "claude-2.1",
    )
    assert answer["id"].startswith("compl_")
    assert len(answer["completion"].split()) == 12
    assert "usage" not in answer
    capped = {**COMPLETE_BODY, "max_tokens_to_sample": 3}
    assert (await client.post("/v1/complete", json=capped)).json()["stop_reason"] == "max_tokens"


async def test_anthropic_legacy_completion_stream(client: httpx.AsyncClient) -> None:
    body = {**COMPLETE_BODY, "stream": True}
    events = sse_events((await client.post("/v1/complete", json=body)).content)
    completions = [data for name, data in events if name == "completion"]
    assert {data["type"] for data in completions} == {"completion"}
    assert [data["stop_reason"] for data in completions] == [None] * 12 + ["stop_sequence"]
    assert len("".join(data["completion"] for data in completions).split()) == 12


# Anthropic Message Batches, token counting, models


async def test_message_batch(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/messages/batches", json=BATCH_BODY)).json()
    ident = created["id"]
    assert (ident[:9], created["type"], created["processing_status"]) == (
        "msgbatch_",
        "message_batch",
        "in_progress",
    )
    counts = {"processing": 2, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    assert created["request_counts"] == counts
    assert created["results_url"] is None
    assert created["created_at"] < created["expires_at"]
    batch = (await client.get(f"/v1/messages/batches/{ident}")).json()
    assert (batch["processing_status"], batch["request_counts"]["succeeded"]) == ("ended", 2)
    assert batch["results_url"] == f"http://mock/v1/messages/batches/{ident}/results"
    page = (await client.get("/v1/messages/batches")).json()
    assert ([item["id"] for item in page["data"]], page["has_more"]) == ([ident], False)
    results = (await client.get(f"/v1/messages/batches/{ident}/results")).text.splitlines()
    lines = [json.loads(line) for line in results]
    assert [(line["custom_id"], line["result"]["type"]) for line in lines] == [
        ("first", "succeeded"),
        ("second", "succeeded"),
    ]
    usages = [line["result"]["message"]["usage"] for line in lines]
    assert [(usage["input_tokens"], usage["output_tokens"]) for usage in usages] == [
        (INPUT, 12),
        (INPUT, 3),
    ]
    deleted = (await client.delete(f"/v1/messages/batches/{ident}")).json()
    assert deleted == {"id": ident, "type": "message_batch_deleted"}
    assert (await client.get("/v1/messages/batches")).json()["data"] == []


async def test_a_cancelled_batch_ends_cancelled(client: httpx.AsyncClient) -> None:
    ident = (await client.post("/v1/messages/batches", json=BATCH_BODY)).json()["id"]
    cancelling = (await client.post(f"/v1/messages/batches/{ident}/cancel")).json()
    assert cancelling["processing_status"] == "canceling"
    assert cancelling["cancel_initiated_at"] is not None
    batch = (await client.get(f"/v1/messages/batches/{ident}")).json()
    assert batch["request_counts"]["canceled"] == 2
    results = (await client.get(f"/v1/messages/batches/{ident}/results")).text.splitlines()
    assert [json.loads(line)["result"] for line in results] == [{"type": "canceled"}] * 2


async def test_a_batch_needs_requests(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages/batches", json={"requests": [{"params": {}}]})
    assert (response.status_code, response.json()["error"]["type"]) == (
        400,
        "invalid_request_error",
    )


async def test_count_tokens_agrees_with_the_message(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/messages/count_tokens", json=ANTHROPIC_BODY)
    assert response.json() == {"input_tokens": INPUT}
    refused = await client.post("/v1/messages/count_tokens", json={"model": "claude-x"})
    assert (refused.status_code, refused.json()["type"]) == (400, "error")


async def test_models(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/v1/models")).json()
    assert listed["object"] == "list"
    assert {model["object"] for model in listed["data"]} == {"model"}
    one = (await client.get("/v1/models/gpt-x")).json()
    assert (one["id"], one["object"]) == ("gpt-x", "model")


# Failure injection on every generating route

GENERATING = [
    ("/v1/messages", ANTHROPIC_BODY),
    ("/v1/chat/completions", OPENAI_BODY),
    ("/v1/responses", RESPONSES_BODY),
    ("/v1/completions", {"model": "gpt-x", "prompt": PROMPT}),
    ("/v1/embeddings", {"model": "embed-x", "input": PROMPT}),
    ("/v1/complete", COMPLETE_BODY),
    ("/v1/messages/batches", BATCH_BODY),
]


@pytest.mark.parametrize(("path", "body"), GENERATING)
async def test_every_generating_route_obeys_x_mock_status(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    response = await client.post(path, json=body, headers={"x-mock-status": "503"})
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    anthropic = path.startswith(("/v1/messages", "/v1/complete"))
    assert (response.json().get("type") == "error") is anthropic
    refused = await client.post(path, content=b"{")
    assert (refused.status_code, refused.json()["error"]["message"]) == (
        400,
        "The body is not JSON.",
    )
    assert (await client.post(path, json=body)).status_code == 200
    stats = (await client.get("/mock/stats")).json()
    assert stats == {"active": 0, "completed": 3, "cancelled": 0, "broken": 0}


async def test_latency_header_delays_a_new_route(client: httpx.AsyncClient) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = {"model": "embed-x", "input": PROMPT}
    await client.post("/v1/embeddings", json=body, headers={"x-mock-latency": "0.2"})
    assert loop.time() - started >= 0.2


@pytest.mark.parametrize(
    ("path", "body", "delta"),
    [
        ("/v1/responses", RESPONSES_BODY, b"event: response.output_text.delta"),
        ("/v1/completions", {"model": "gpt-x", "prompt": PROMPT, "max_tokens": 5000}, b"data: "),
        ("/v1/complete", {**COMPLETE_BODY, "max_tokens_to_sample": 5000}, b"event: completion"),
    ],
)
async def test_break_after_cuts_every_stream(
    server: str, path: str, body: dict[str, Any], delta: bytes
) -> None:
    received = b""
    async with httpx.AsyncClient(base_url=server) as client:
        headers = {"x-mock-break-after": "3"}
        with pytest.raises(httpx.RemoteProtocolError):
            request = {**body, "stream": True}
            async with client.stream("POST", path, json=request, headers=headers) as response:
                async for chunk in response.aiter_raw():
                    received += chunk
    assert received.count(delta) == 3
    await stats_become(server, active=0, completed=0, broken=1)
