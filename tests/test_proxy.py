"""The proxy through real servers: streaming, disconnects, upstream failures, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.admission import Admission
from gateway.app import create_app
from gateway.metering import Outcome, UsageRecord
from gateway.policy.model import IdentityConfig, PolicySet
from gateway.settings import Settings
from tests.servers import free_port, running
from tests.upstreams import Script, ScriptedUpstream

ACCOUNT = {"x-account-id": "acct-1"}
ANTHROPIC_BODY = {
    "model": "claude-test",
    "max_tokens": 64,
    "stream": True,
    "messages": [{"role": "user", "content": "Say hello."}],
}
SSE_EVENTS = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
    b'"role":"assistant","model":"claude-test","content":[],"stop_reason":null,"usage":'
    b'{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
    b'"output_tokens":1}}}\n\n',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hello"}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":" there."}}\n\n',
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    b'"stop_sequence":null},"usage":{"output_tokens":5}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]


def open_policies() -> PolicySet:
    return PolicySet(version="test", sources=(), identity=IdentityConfig(), policies=())


class Recorder:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []
        self.arrived = asyncio.Event()

    async def __call__(self, record: UsageRecord, admission: Admission | None) -> None:
        self.records.append(record)
        self.arrived.set()

    async def one(self) -> UsageRecord:
        await asyncio.wait_for(self.arrived.wait(), 10)
        assert len(self.records) == 1
        return self.records[0]


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[ScriptedUpstream, str]]:
    fake = ScriptedUpstream()
    async with running(fake) as url:
        yield fake, url


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def gateway(upstream: tuple[ScriptedUpstream, str], recorder: Recorder) -> AsyncIterator[str]:
    settings = Settings(upstream=upstream[1], upstream_timeout=2.0, max_body_bytes=4096)
    app = create_app(settings, policies=open_policies(), hooks=[recorder])
    async with running(app) as url:
        yield url


async def test_stream_is_relayed_unbuffered_and_byte_for_byte(
    upstream: tuple[ScriptedUpstream, str], gateway: str, recorder: Recorder
) -> None:
    fake, _ = upstream
    first_seen = asyncio.Event()

    async def hold_until_client_has_first_event(i: int) -> None:
        # The upstream sends nothing more until the client has read the first event, so
        # a gateway that buffered would never deliver it and the test would time out.
        if i == 1:
            await asyncio.wait_for(first_seen.wait(), 5)

    fake.script = Script(
        headers=SSE_HEADERS, chunks=SSE_EVENTS, gate=hold_until_client_has_first_event
    )
    received = bytearray()
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "POST", f"{gateway}/v1/messages", json=ANTHROPIC_BODY, headers=ACCOUNT
        ) as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            received += chunk
            first_seen.set()
    assert bytes(received) == b"".join(SSE_EVENTS)
    record = await recorder.one()
    assert record.outcome is Outcome.COMPLETE
    assert (record.usage.input_tokens, record.usage.output_tokens) == (12, 5)
    assert record.usage_reported


async def test_request_is_forwarded_faithfully(
    upstream: tuple[ScriptedUpstream, str], gateway: str
) -> None:
    fake, _ = upstream
    fake.script = Script(
        headers=[
            (b"content-type", b"application/json"),
            (b"set-cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
            (b"connection", b"close, x-private"),
            (b"x-private", b"hop"),
        ],
        chunks=[b'{"object":"list","data":[]}'],
    )
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{gateway}/v1/models?limit=5",
            headers={
                "x-account-id": "acct-1",
                "x-forwarded-for": "203.0.113.9",
                "keep-alive": "timeout=5",
                "x-custom": "kept",
            },
        )
    assert response.status_code == 200
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert "x-private" not in response.headers
    seen = fake.seen[0]
    headers = {k.decode(): v.decode() for k, v in seen.headers}
    assert (seen.method, seen.path, seen.query) == ("GET", "/v1/models", b"limit=5")
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["host"] == fake_host(upstream[1])
    assert headers["x-custom"] == "kept"
    assert "keep-alive" not in headers


def fake_host(url: str) -> str:
    return url.removeprefix("http://")


async def test_client_disconnect_cancels_streaming_upstream(
    upstream: tuple[ScriptedUpstream, str], gateway: str, recorder: Recorder
) -> None:
    fake, _ = upstream
    never = asyncio.Event()

    async def stall_after_three(i: int) -> None:
        if i >= 3:
            await never.wait()

    fake.script = Script(headers=SSE_HEADERS, chunks=SSE_EVENTS, gate=stall_after_three)
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "POST", f"{gateway}/v1/messages", json=ANTHROPIC_BODY, headers=ACCOUNT
        ) as response,
    ):
        got = b""
        async for chunk in response.aiter_raw():
            got += chunk
            if got.count(b"\n\n") >= 3:
                break  # leaving the block closes the connection half-way
    await asyncio.wait_for(fake.abandoned_event.wait(), 10)
    assert fake.completed == 0
    record = await recorder.one()
    assert record.outcome is Outcome.CLIENT_GONE
    assert record.usage.input_tokens == 12  # from message_start
    assert record.usage.output_tokens > 0  # estimated from the text already streamed
    assert not record.usage_reported


async def test_client_disconnect_cancels_upstream_still_thinking(
    upstream: tuple[ScriptedUpstream, str], gateway: str, recorder: Recorder
) -> None:
    fake, _ = upstream
    fake.script = Script(delay_before=30, chunks=[b"{}"])
    body = dict(ANTHROPIC_BODY, stream=False)
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{gateway}/v1/messages", json=body, headers=ACCOUNT, timeout=0.5)
    await asyncio.wait_for(fake.abandoned_event.wait(), 10)
    record = await recorder.one()
    assert record.outcome is Outcome.CLIENT_GONE


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/v1/messages",
            dict(ANTHROPIC_BODY, stream=False),
            {"type": "error", "error": {"type": "api_error"}},
        ),
        (
            "/v1/chat/completions",
            {"model": "gpt-test", "messages": []},
            {"error": {"type": "server_error"}},
        ),
    ],
)
async def test_unreachable_upstream_is_502_in_the_apis_shape(
    path: str, body: dict[str, object], expected: dict[str, object]
) -> None:
    settings = Settings(upstream=f"http://127.0.0.1:{free_port()}")
    async with (
        running(create_app(settings, policies=open_policies())) as url,
        httpx.AsyncClient() as client,
    ):
        response = await client.post(url + path, json=body, headers=ACCOUNT)
    assert response.status_code == 502
    payload = response.json()
    assert_subset(expected, payload)
    message = payload["error"]["message"]
    assert "could not be reached" in message and "Traceback" not in response.text


async def test_slow_upstream_is_504(upstream: tuple[ScriptedUpstream, str], gateway: str) -> None:
    fake, _ = upstream
    fake.script = Script(delay_before=5, chunks=[b"{}"])
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{gateway}/v1/chat/completions",
            json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
            headers=ACCOUNT,
            timeout=10,
        )
    assert response.status_code == 504
    assert response.json()["error"]["message"] == (
        "The model API did not answer in time; it was not asked again."
    )


async def test_malformed_json_is_400_and_not_forwarded(
    upstream: tuple[ScriptedUpstream, str], gateway: str
) -> None:
    fake, _ = upstream
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{gateway}/v1/messages", content=b'{"model": ', headers=ACCOUNT
        )
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "The request body is not valid JSON.",
        },
    }
    assert fake.seen == []


async def test_body_over_the_limit_is_413(
    upstream: tuple[ScriptedUpstream, str], gateway: str
) -> None:
    fake, _ = upstream
    big = dict(ANTHROPIC_BODY, messages=[{"role": "user", "content": "x" * 5000}])
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{gateway}/v1/messages", json=big, headers=ACCOUNT)
    assert response.status_code == 413
    assert "4096 bytes" in response.json()["error"]["message"]
    assert fake.seen == []


async def test_stream_breaking_midway_ends_the_stream_and_still_records_usage(
    upstream: tuple[ScriptedUpstream, str], gateway: str, recorder: Recorder
) -> None:
    fake, _ = upstream
    fake.script = Script(headers=SSE_HEADERS, chunks=SSE_EVENTS, break_after=4)
    received = b""
    async with httpx.AsyncClient() as client:
        try:
            async with client.stream(
                "POST", f"{gateway}/v1/messages", json=ANTHROPIC_BODY, headers=ACCOUNT
            ) as response:
                async for chunk in response.aiter_raw():
                    received += chunk
        except httpx.RemoteProtocolError:
            pass  # the gateway may end the chunked body early; either way the stream ends
    assert received == b"".join(SSE_EVENTS[:4])
    record = await recorder.one()
    assert record.outcome is Outcome.UPSTREAM_BROKE
    assert record.usage.output_tokens > 0


def assert_subset(expected: object, actual: object) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict)
        for key, value in expected.items():
            assert key in actual, key
            assert_subset(value, actual[key])
    else:
        assert expected == actual
