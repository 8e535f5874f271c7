from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.apis import ANTHROPIC, ErrorKind, load_body
from gateway.apis.base import json_size
from gateway.errors import MalformedBody
from gateway.metering import Usage

DATA = Path(__file__).parent / "data"
MESSAGE = (DATA / "anthropic_message.json").read_bytes()
STREAM = (DATA / "anthropic_stream.sse").read_bytes()
STREAM_USAGE = Usage(input_tokens=472, output_tokens=89, cache_read_input_tokens=1536)
STREAMED_TEXT = (
    "Okay, let's check the weather in San Francisco — I'll ask for °F since you're in the US"
    " (café-hopping weather, hopefully)."
    '{"location": "San Francisco, CA", "unit": "fahrenheit"}'
)


def run(chunks: list[bytes]) -> tuple[bytes, Usage, bool]:
    meter = ANTHROPIC.stream_meter(injected=False)
    out = b"".join(meter.feed(chunk) for chunk in chunks) + meter.flush()
    usage, reported = meter.result()
    return out, usage, reported


def events(stream: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in stream.split(b"\n\n") if event]


def test_usage_from_a_message() -> None:
    usage = ANTHROPIC.usage_from_json(MESSAGE)
    assert usage == Usage(
        input_tokens=2095,
        output_tokens=503,
        cache_creation_input_tokens=512,
        cache_read_input_tokens=8192,
    )
    assert usage.billable_input_tokens == 2095 + 512


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b'{"type": "message"}'])
def test_no_usage_in_an_answer_without_one(data: bytes) -> None:
    assert ANTHROPIC.usage_from_json(data) is None


def test_stream_usage_and_bytes_pass_untouched() -> None:
    out, usage, reported = run([STREAM])
    assert (out, usage, reported) == (STREAM, STREAM_USAGE, True)


def test_feed_returns_the_very_chunk_it_was_given() -> None:
    meter = ANTHROPIC.stream_meter(injected=False)
    chunk = STREAM[:100]
    assert meter.feed(chunk) is chunk


def test_stream_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        assert run([STREAM[:cut], STREAM[cut:]]) == (STREAM, STREAM_USAGE, True), cut


def test_stream_fed_one_byte_at_a_time() -> None:
    chunks = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert run(chunks) == (STREAM, STREAM_USAGE, True)


@given(st.lists(st.integers(0, len(STREAM)), max_size=30), st.booleans())
def test_stream_split_anywhere(cuts: list[int], crlf: bool) -> None:
    stream = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    bounds = [0, *sorted(min(cut * len(stream) // len(STREAM), len(stream)) for cut in cuts)]
    chunks = [stream[a:b] for a, b in zip(bounds, [*bounds[1:], len(stream)], strict=True)]
    assert run(chunks) == (stream, STREAM_USAGE, True)


def test_cumulative_output_is_the_last_value_not_a_sum() -> None:
    parts = events(STREAM)
    early = (
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":null},'
        b'"usage":{"output_tokens":40}}\n\n'
    )
    stream = b"".join([*parts[:-2], early, *parts[-2:]])
    _, usage, reported = run([stream])
    assert (usage.output_tokens, reported) == (89, True)


def test_a_later_message_delta_replaces_input_counts() -> None:
    late = (
        b'event: message_delta\ndata: {"type":"message_delta","delta":{},'
        b'"usage":{"input_tokens":500,"cache_read_input_tokens":1536,"output_tokens":95}}\n\n'
    )
    _, usage, _ = run([STREAM, late])
    assert usage == Usage(input_tokens=500, output_tokens=95, cache_read_input_tokens=1536)


def test_a_stream_cut_short_estimates_output_from_streamed_text() -> None:
    parts = events(STREAM)
    cut = next(i for i, part in enumerate(parts) if b"message_delta" in part)
    _, usage, reported = run([b"".join(parts[:cut])])
    assert reported is False
    assert usage.input_tokens == 472
    assert usage.cache_read_input_tokens == 1536
    assert usage.output_tokens == math.ceil(len(STREAMED_TEXT.encode()) / 3)


def test_a_stream_cut_mid_event_still_counts_what_came_before() -> None:
    half = STREAM.index(b"San Francisco") + 3
    _, usage, reported = run([STREAM[:half]])
    assert reported is False
    assert usage.output_tokens == math.ceil(len(b"Okay") / 3) == 2


def test_a_stream_cut_after_message_start_keeps_its_counts() -> None:
    _, usage, reported = run([events(STREAM)[0]])
    assert (usage, reported) == (Usage(472, 2, 0, 1536), False)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 1024, **fields}


def test_estimate_of_one_short_message() -> None:
    estimate = ANTHROPIC.estimate(
        body(messages=[{"role": "user", "content": "Hello, world"}]), 4096
    )
    assert estimate.model == "claude-sonnet-4-5"
    assert estimate.input_tokens == math.ceil(12 / 3) + 4 + 3
    assert (estimate.max_output_tokens, estimate.stream) == (1024, False)


def test_estimate_counts_system_tools_and_blocks() -> None:
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Wetter in Köln?"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}],
        },
    ]
    system = [{"type": "text", "text": "Be brief."}]
    estimate = ANTHROPIC.estimate(body(system=system, tools=tools, messages=messages), 4096)
    size = len("Be brief.") + json_size(tools) + len("Wetter in Köln?".encode())
    size += json_size(messages[1]["content"][0])
    assert estimate.input_tokens == math.ceil(size / 3) + 2 * 4 + 3


def test_estimate_gives_images_a_fixed_cost_even_inside_tool_results() -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "A" * 90_000},
    }
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [image, {"type": "text", "text": "42"}],
    }
    estimate = ANTHROPIC.estimate(
        body(messages=[{"role": "user", "content": [image, result]}]), 4096
    )
    size = json_size({"type": "tool_result", "tool_use_id": "t1"}) + 2
    assert estimate.input_tokens == 2 * 1600 + math.ceil(size / 3) + 4 + 3


def test_estimate_defaults_the_output_cap_and_reads_stream() -> None:
    estimate = ANTHROPIC.estimate({"model": "m", "messages": [], "stream": True}, 4096)
    assert (estimate.max_output_tokens, estimate.stream) == (4096, True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": None}, "'model' must be a non-empty string naming the model; got null."),
        ({"model": 42}, "'model' must be a non-empty string naming the model; got the number 42."),
        ({"messages": "hi"}, "'messages' must be a list of message objects; got a string."),
        (
            {"messages": [{"role": "user", "content": "a"}, ["b"]]},
            "'messages[1]' must be an object with 'role' and 'content'; got a list.",
        ),
        ({"max_tokens": 0}, "'max_tokens' must be a positive integer; got the number 0."),
        ({"max_tokens": True}, "'max_tokens' must be a positive integer; got a boolean."),
        ({"max_tokens": "1024"}, "'max_tokens' must be a positive integer; got a string."),
        ({"stream": "yes"}, "'stream' must be true or false; got a string."),
    ],
)
def test_bad_shapes_say_what_to_fix(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        ANTHROPIC.estimate(body(**{"messages": [], **fields}), 4096)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "The request body is not valid JSON."),
        (b"[]", "The request body must be a JSON object; got a list."),
    ],
)
def test_load_body_refuses_what_is_not_an_object(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedBody, match=message.replace(".", r"\.")):
        load_body(raw)


def test_prepare_forwards_a_capped_body_byte_for_byte() -> None:
    raw = b'{"model": "m", "max_tokens": 7, "messages": [], "stream": true}'
    forwarded, injected = ANTHROPIC.prepare(json.loads(raw), raw, 4096)
    assert forwarded is raw
    assert injected is False


def test_prepare_writes_the_default_cap_into_an_uncapped_body() -> None:
    raw = b'{"model": "m", "messages": [], "stream": true}'
    forwarded, _ = ANTHROPIC.prepare(json.loads(raw), raw, 321)
    assert json.loads(forwarded) == {**json.loads(raw), "max_tokens": 321}
    assert ANTHROPIC.estimate(json.loads(raw), 321).max_output_tokens == 321


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        (ErrorKind.INVALID_REQUEST, "invalid_request_error"),
        (ErrorKind.AUTHENTICATION, "authentication_error"),
        (ErrorKind.PERMISSION, "permission_error"),
        (ErrorKind.NOT_FOUND, "not_found_error"),
        (ErrorKind.REQUEST_TOO_LARGE, "request_too_large"),
        (ErrorKind.RATE_LIMIT, "rate_limit_error"),
        (ErrorKind.API_ERROR, "api_error"),
        (ErrorKind.OVERLOADED, "overloaded_error"),
        (ErrorKind.TIMEOUT, "api_error"),
    ],
)
def test_error_body(kind: ErrorKind, error_type: str) -> None:
    body = json.loads(ANTHROPIC.error_body(kind.status, kind, "Slow down."))
    assert body == {"type": "error", "error": {"type": error_type, "message": "Slow down."}}
