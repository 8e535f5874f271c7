from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.apis import FORMATS
from gateway.apis.base import json_size
from gateway.apis.openai_responses import OPENAI_RESPONSES
from gateway.errors import MalformedBody
from gateway.metering import Usage

DATA = Path(__file__).parent / "data"
RESPONSE = (DATA / "openai_responses.json").read_bytes()
STREAM = (DATA / "openai_responses_stream.sse").read_bytes()
EVENTS = [event + b"\n\n" for event in STREAM.split(b"\n\n") if event]
STREAM_USAGE = Usage(input_tokens=1342 - 1152, output_tokens=41, cache_read_input_tokens=1152)
STREAMED_TEXT = 'Bonjour ! Je regarde la météo à Lyon pour vous.{"location":"Lyon, France"}'
CAP = 4096


def run(chunks: list[bytes]) -> tuple[bytes, Usage, bool]:
    meter = OPENAI_RESPONSES.stream_meter(injected=False)
    out = b"".join(meter.feed(chunk) for chunk in chunks) + meter.flush()
    usage, reported = meter.result()
    return out, usage, reported


def test_the_route_kind_reads_responses() -> None:
    assert FORMATS["openai-responses"] is OPENAI_RESPONSES
    assert (OPENAI_RESPONSES.name, OPENAI_RESPONSES.meter) == ("openai", "openai-responses")


def test_usage_from_a_response_moves_cached_tokens_out_of_input() -> None:
    usage = OPENAI_RESPONSES.usage_from_json(RESPONSE)
    assert usage == Usage(input_tokens=2311 - 2048, output_tokens=157, cache_read_input_tokens=2048)


def test_a_background_response_has_no_usage_so_the_reservation_is_charged() -> None:
    queued = json.dumps(
        {"id": "resp_1", "object": "response", "status": "queued", "background": True}
        | {"output": [], "usage": None}
    ).encode()
    assert OPENAI_RESPONSES.usage_from_json(queued) is None


def test_a_stream_passes_untouched_and_reports_its_usage() -> None:
    meter = OPENAI_RESPONSES.stream_meter(injected=False)
    assert meter.feed(STREAM) is STREAM
    assert meter.flush() == b""
    assert meter.result() == (STREAM_USAGE, True)


def test_stream_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        assert run([STREAM[:cut], STREAM[cut:]]) == (STREAM, STREAM_USAGE, True), cut


@given(st.lists(st.integers(0, len(STREAM)), max_size=30), st.booleans())
def test_stream_split_anywhere(cuts: list[int], crlf: bool) -> None:
    stream = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    bounds = sorted({0, len(stream), *(min(cut * 2, len(stream)) for cut in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(chunks) == (stream, STREAM_USAGE, True)


def test_a_stream_cut_short_estimates_output_from_deltas_not_done_events() -> None:
    out, usage, reported = run(EVENTS[:-1])
    assert out == b"".join(EVENTS[:-1])
    assert reported is False
    assert usage == Usage(output_tokens=math.ceil(len(STREAMED_TEXT.encode()) / 3))


@pytest.mark.parametrize("kind", ["response.incomplete", "response.failed"])
def test_usage_also_comes_from_an_incomplete_or_failed_response(kind: str) -> None:
    usage = {"input_tokens": 900, "output_tokens": 1024, "input_tokens_details": None}
    event = {"type": kind, "sequence_number": 9, "response": {"status": "x", "usage": usage}}
    last = f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode()
    assert run([*EVENTS[:-1], last])[1:] == (Usage(900, 1024), True)


def test_a_failed_response_without_usage_leaves_the_stream_unreported() -> None:
    failed = (
        b'event: response.failed\ndata: {"type":"response.failed","response":{"usage":null}}\n\n'
    )
    assert run([EVENTS[0], failed])[1:] == (Usage(), False)


def test_reasoning_and_refusal_deltas_count_when_cut_short() -> None:
    deltas = [
        ("response.reasoning_text.delta", "Let me think"),
        ("response.reasoning_summary_text.delta", "**Plan**"),
        ("response.refusal.delta", "Je ne peux pas"),
        ("response.audio.delta", "UklGRiQAAABXQVZF"),  # audio is not text
    ]
    events = [
        f"data: {json.dumps({'type': kind, 'delta': text})}\n\n".encode() for kind, text in deltas
    ]
    size = len("Let me think**Plan**Je ne peux pas")
    assert run(events)[1:] == (Usage(output_tokens=math.ceil(size / 3)), False)


def test_a_background_stream_cut_short_is_charged_its_cap() -> None:
    # the rest of a background response can be fetched later through an unmetered route
    background = STREAM.replace(b'"background":false', b'"background":true')
    events = [event + b"\n\n" for event in background.split(b"\n\n") if event]
    assert run(events[:5])[1:] == (Usage(output_tokens=1024), False)
    assert run(events)[1:] == (STREAM_USAGE, True)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-5-mini", "input": "Hello, world", **fields}


def test_estimate_of_a_string_input() -> None:
    estimate = OPENAI_RESPONSES.estimate(body(max_output_tokens=500), CAP)
    assert estimate.input_tokens == math.ceil(12 / 3) + 4 + 3
    assert (estimate.model, estimate.max_output_tokens, estimate.stream) == (
        "gpt-5-mini",
        500,
        False,
    )


def test_estimate_counts_items_parts_instructions_and_tools() -> None:
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    call = {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"}
    question = "Qu'y a-t-il sur cette image ?"
    items = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": question},
                {"type": "input_image", "image_url": "https://example.com/lyon.png"},
                {"type": "input_file", "file_id": "file-6F2ksmvXxt4VdoqmHRw6kL"},
            ],
        },
        {"role": "assistant", "content": [{"type": "output_text", "text": "Un chat."}]},
        call,
        {"type": "function_call_output", "call_id": "c1", "output": "18°C, ensoleillé"},
    ]
    fields = {"input": items, "instructions": "Réponds en français.", "tools": tools}
    estimate = OPENAI_RESPONSES.estimate(body(**fields), CAP)
    size = len("Be brief.") + len(question) + len("Un chat.") + json_size(call)
    size += json_size({"type": "function_call_output", "call_id": "c1"})
    size += len("18°C, ensoleillé".encode()) + len("Réponds en français.".encode())
    size += json_size(tools)
    assert estimate.input_tokens == math.ceil(size / 3) + 5 * 4 + 3 + 1600 + 3000


def test_a_screenshot_returned_by_a_tool_counts_as_an_image_not_as_its_base64() -> None:
    screenshot = {
        "type": "computer_screenshot",
        "image_url": "data:image/png;base64," + "A" * 90_000,
    }
    item = {"type": "computer_call_output", "call_id": "c2", "output": screenshot}
    estimate = OPENAI_RESPONSES.estimate(body(input=[item]), CAP)
    size = json_size({"type": "computer_call_output", "call_id": "c2"})
    assert estimate.input_tokens == math.ceil(size / 3) + 4 + 3 + 1600


def test_estimate_reserves_the_default_cap_when_none_is_set() -> None:
    estimate = OPENAI_RESPONSES.estimate(body(stream=True), CAP)
    assert (estimate.max_output_tokens, estimate.stream) == (CAP, True)


def test_prepare_writes_the_default_cap_into_an_uncapped_request() -> None:
    raw = json.dumps(body(stream=True)).encode()
    forwarded, injected = OPENAI_RESPONSES.prepare(json.loads(raw), raw, CAP)
    assert json.loads(forwarded) == body(stream=True, max_output_tokens=CAP)
    assert injected is False


@pytest.mark.parametrize(
    "fields", [{"max_output_tokens": 300}, {"stream": True, "max_output_tokens": 9}]
)
def test_prepare_forwards_a_capped_request_byte_for_byte(fields: dict[str, Any]) -> None:
    raw = json.dumps(body(**fields), indent=1).encode()
    forwarded, injected = OPENAI_RESPONSES.prepare(json.loads(raw), raw, CAP)
    assert forwarded is raw
    assert injected is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input": 42}, "'input' must be a string or a list of input items; got the number 42."),
        (
            {"input": [{"role": "user", "content": "a"}, "b"]},
            "'input[1]' must be an object (a message or another input item); got a string.",
        ),
        ({"instructions": ["x"]}, "'instructions' must be a string; got a list."),
        (
            {"max_output_tokens": 0},
            "'max_output_tokens' must be a positive integer; got the number 0.",
        ),
        ({"model": None}, "'model' must be a non-empty string naming the model; got null."),
        ({"stream": "true"}, "'stream' must be true or false; got a string."),
    ],
)
def test_bad_shapes_say_what_to_fix(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        OPENAI_RESPONSES.estimate(body(**fields), CAP)
    assert str(caught.value) == message
