from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.apis import OPENAI, ErrorKind
from gateway.apis.base import json_size
from gateway.errors import MalformedBody
from gateway.metering import Usage

DATA = Path(__file__).parent / "data"
COMPLETION = (DATA / "openai_completion.json").read_bytes()
STREAM = (DATA / "openai_stream.sse").read_bytes()
EVENTS = [event + b"\n\n" for event in STREAM.split(b"\n\n") if event]
USAGE_EVENT = next(event for event in EVENTS if b'"choices":[],"usage":{' in event)
WITHOUT_USAGE = STREAM.replace(USAGE_EVENT, b"")
STREAM_USAGE = Usage(input_tokens=1283 - 1152, output_tokens=37, cache_read_input_tokens=1152)
STREAMED_TEXT = (
    'Bonjour ! Je suis là pour vous aider avec votre itinéraire à Lyon.{"location":"Lyon, France"}'
)


def run(chunks: list[bytes], injected: bool) -> tuple[bytes, Usage, bool]:
    meter = OPENAI.stream_meter(injected)
    out = b"".join(meter.feed(chunk) for chunk in chunks) + meter.flush()
    usage, reported = meter.result()
    return out, usage, reported


def test_usage_from_a_completion_moves_cached_tokens_out_of_input() -> None:
    usage = OPENAI.usage_from_json(COMPLETION)
    assert usage == Usage(input_tokens=93, output_tokens=46, cache_read_input_tokens=1024)
    assert usage.billable_input_tokens == 93


def test_usage_without_details_is_all_input() -> None:
    data = b'{"usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}'
    assert OPENAI.usage_from_json(data) == Usage(input_tokens=12, output_tokens=3)


def test_a_stream_that_asked_for_usage_passes_untouched() -> None:
    meter = OPENAI.stream_meter(injected=False)
    assert meter.feed(STREAM) is STREAM
    assert meter.flush() == b""
    assert meter.result() == (STREAM_USAGE, True)


def test_the_injected_usage_chunk_is_removed_and_nothing_else() -> None:
    out, usage, reported = run([STREAM], injected=True)
    assert out == WITHOUT_USAGE
    assert out.count(b"\n\n") == len(EVENTS) - 1
    assert out.endswith(b"data: [DONE]\n\n")
    assert (usage, reported) == (STREAM_USAGE, True)


@pytest.mark.parametrize("injected", [False, True])
def test_stream_split_at_every_byte_boundary(injected: bool) -> None:
    expected = (WITHOUT_USAGE if injected else STREAM, STREAM_USAGE, True)
    for cut in range(len(STREAM) + 1):
        assert run([STREAM[:cut], STREAM[cut:]], injected) == expected, cut


@given(st.lists(st.integers(0, len(STREAM)), max_size=30), st.booleans(), st.booleans())
def test_stream_split_anywhere(cuts: list[int], injected: bool, crlf: bool) -> None:
    def lines(data: bytes) -> bytes:
        return data.replace(b"\n", b"\r\n") if crlf else data

    stream = lines(STREAM)
    bounds = sorted({0, len(stream), *(min(cut * 2, len(stream)) for cut in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    expected = lines(WITHOUT_USAGE) if injected else stream
    assert run(chunks, injected) == (expected, STREAM_USAGE, True)


def test_an_injected_stream_holds_only_an_incomplete_event() -> None:
    meter = OPENAI.stream_meter(injected=True)
    first, second = EVENTS[0], EVENTS[1]
    assert meter.feed(first + second[:10]) == first
    assert meter.feed(second[10:]) == second


def test_a_usage_chunk_with_content_is_not_dropped() -> None:
    chunk = (
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}],'
        b'"usage":{"prompt_tokens":5,"completion_tokens":1}}\n\n'
    )
    assert run([chunk], injected=True) == (chunk, Usage(5, 1), True)


def test_a_stream_cut_short_estimates_output_from_streamed_text() -> None:
    cut = EVENTS.index(USAGE_EVENT)
    for injected in (False, True):
        out, usage, reported = run([b"".join(EVENTS[:cut])], injected)
        assert out == b"".join(EVENTS[:cut])
        assert reported is False
        assert usage == Usage(output_tokens=math.ceil(len(STREAMED_TEXT.encode()) / 3))


def test_an_unterminated_last_event_is_forwarded_at_flush() -> None:
    tail = EVENTS[1].rstrip(b"\n")
    meter = OPENAI.stream_meter(injected=True)
    assert meter.feed(tail) == b""
    assert meter.flush() == tail
    assert meter.result() == (Usage(output_tokens=math.ceil(len(b"Bonjour") / 3)), False)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], **fields}


def prepared(fields: dict[str, Any]) -> tuple[bytes, dict[str, Any], bool]:
    raw = json.dumps(body(**fields)).encode()
    forwarded, injected = OPENAI.prepare(json.loads(raw), raw, 4096)
    return raw, json.loads(forwarded), injected


@pytest.mark.parametrize(
    "options", [None, {}, {"include_usage": False}, {"include_usage": False, "x": 1}]
)
def test_prepare_asks_for_usage_on_streams(options: dict[str, Any] | None) -> None:
    fields: dict[str, Any] = {"stream": True}
    if options is not None:
        fields["stream_options"] = options
    fields["max_tokens"] = 9
    _, forwarded, injected = prepared(fields)
    assert injected is True
    wanted = {**(options or {}), "include_usage": True}
    assert forwarded == body(stream=True, max_tokens=9, stream_options=wanted)


@pytest.mark.parametrize(
    "fields", [{}, {"stream": False}, {"stream": True, "stream_options": {"include_usage": True}}]
)
def test_prepare_forwards_other_capped_bodies_byte_for_byte(fields: dict[str, Any]) -> None:
    raw = json.dumps(body(max_completion_tokens=5, **fields), indent=1).encode()
    forwarded, injected = OPENAI.prepare(json.loads(raw), raw, 4096)
    assert (forwarded, injected) == (raw, False)
    assert forwarded is raw


@pytest.mark.parametrize("n", [1, 3])
def test_an_uncapped_request_gets_the_default_cap_written_in_and_reserved_n_times(n: int) -> None:
    _, forwarded, injected = prepared({"n": n})
    assert forwarded == body(n=n, max_completion_tokens=4096)
    assert injected is False
    assert OPENAI.estimate(body(n=n), 4096).max_output_tokens == 4096 * n


def test_estimate_of_one_short_message() -> None:
    estimate = OPENAI.estimate(body(max_tokens=100), 4096)
    assert estimate.input_tokens == math.ceil(2 / 3) + 4 + 3
    assert (estimate.model, estimate.max_output_tokens, estimate.stream) == ("gpt-4o", 100, False)


def test_estimate_output_cap_prefers_max_completion_tokens_and_multiplies_by_n() -> None:
    assert (
        OPENAI.estimate(body(max_completion_tokens=300, max_tokens=50), 4096).max_output_tokens
        == 300
    )
    assert OPENAI.estimate(body(max_tokens=50, n=3), 4096).max_output_tokens == 150
    assert OPENAI.estimate(body(), 4096).max_output_tokens == 4096


def test_estimate_counts_tool_calls_tools_and_images() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    estimate = OPENAI.estimate({"model": "gpt-4o", "messages": messages, "tools": tools}, 4096)
    size = len("Be brief.") + len("What is this?") + json_size({"tool_calls": calls})
    size += json_size({"tool_call_id": "c1"}) + len("ok") + json_size(tools)
    assert estimate.input_tokens == math.ceil(size / 3) + 4 * 4 + 3 + 1600


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"max_completion_tokens": -5},
            "'max_completion_tokens' must be a positive integer; got the number -5.",
        ),
        ({"n": 0}, "'n' must be a positive integer; got the number 0."),
        (
            {"messages": {"role": "user"}},
            "'messages' must be a list of message objects; got an object.",
        ),
        ({"model": ""}, "'model' must be a non-empty string naming the model; got a string."),
    ],
)
def test_bad_shapes_say_what_to_fix(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        OPENAI.estimate(body(**fields), 4096)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("kind", "error_type", "code"),
    [
        (ErrorKind.INVALID_REQUEST, "invalid_request_error", None),
        (ErrorKind.AUTHENTICATION, "invalid_request_error", "invalid_api_key"),
        (ErrorKind.RATE_LIMIT, "rate_limit_exceeded", "rate_limit_exceeded"),
        (ErrorKind.API_ERROR, "server_error", None),
        (ErrorKind.TIMEOUT, "server_error", "timeout"),
    ],
)
def test_error_body(kind: ErrorKind, error_type: str, code: str | None) -> None:
    error = {"message": "Slow down.", "type": error_type, "param": None, "code": code}
    assert json.loads(OPENAI.error_body(kind.status, kind, "Slow down.")) == {"error": error}


def test_fields_the_model_reads_beside_the_prompt_are_counted() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"d": "y" * 9000}}}
    plain = OPENAI.estimate(body(max_tokens=5), 4096).input_tokens
    with_schema = OPENAI.estimate(body(max_tokens=5, response_format=schema), 4096)
    assert with_schema.input_tokens >= plain + 3000


def test_a_list_too_long_to_walk_is_still_counted_whole() -> None:
    parts = [{"type": "text", "text": "ab"}] * 50_000
    estimate = OPENAI.estimate(body(messages=[{"role": "user", "content": parts}]), 4096)
    assert estimate.input_tokens >= 50_000 * 2 // 3  # every part's text, past the walk too
