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
from gateway.apis.openai_completions import OPENAI_COMPLETIONS
from gateway.errors import MalformedBody
from gateway.metering import Usage

DATA = Path(__file__).parent / "data"
STREAM = (DATA / "openai_completions_stream.sse").read_bytes()
EVENTS = [event + b"\n\n" for event in STREAM.split(b"\n\n") if event]
USAGE_EVENT = next(event for event in EVENTS if b'"choices":[],"usage":{' in event)
WITHOUT_USAGE = STREAM.replace(USAGE_EVENT, b"")
STREAM_USAGE = Usage(input_tokens=9, output_tokens=12)
STREAMED_TEXT = "\n\nLes trois couleurs du drapeau français sont le bleu,"
CAP = 16  # the route's default, as the API's own

COMPLETION = b"""{
  "id": "cmpl-C8xS0bR1wMl4nO8qU2tX5zA7cE1gJ",
  "object": "text_completion",
  "created": 1756482107,
  "model": "gpt-3.5-turbo-instruct:20230824-v2",
  "choices": [
    {"text": "\\n\\nThis is indeed a test", "index": 0, "logprobs": null, "finish_reason": "length"}
  ],
  "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
}"""


def run(chunks: list[bytes], injected: bool) -> tuple[bytes, Usage, bool]:
    meter = OPENAI_COMPLETIONS.stream_meter(injected)
    out = b"".join(meter.feed(chunk) for chunk in chunks) + meter.flush()
    usage, reported = meter.result()
    return out, usage, reported


def test_the_route_kind_reads_legacy_completions() -> None:
    assert FORMATS["openai-completions"] is OPENAI_COMPLETIONS
    assert (OPENAI_COMPLETIONS.name, OPENAI_COMPLETIONS.meter) == ("openai", "openai-completions")


def test_usage_from_a_completion() -> None:
    assert OPENAI_COMPLETIONS.usage_from_json(COMPLETION) == Usage(5, 7)


def test_cached_tokens_move_out_of_input() -> None:
    usage = {"prompt_tokens": 1100, "completion_tokens": 3, "prompt_tokens_details": {}}
    usage["prompt_tokens_details"] = {"cached_tokens": 1024, "audio_tokens": 0}
    data = json.dumps({"usage": usage}).encode()
    assert OPENAI_COMPLETIONS.usage_from_json(data) == Usage(76, 3, 0, 1024)


@pytest.mark.parametrize("data", [b"not json", b'{"choices": []}', b'{"usage": null}'])
def test_no_usage_in_an_answer_without_one(data: bytes) -> None:
    assert OPENAI_COMPLETIONS.usage_from_json(data) is None


def test_a_stream_that_asked_for_usage_passes_untouched() -> None:
    meter = OPENAI_COMPLETIONS.stream_meter(injected=False)
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


def test_a_stream_cut_short_estimates_output_from_streamed_text() -> None:
    cut = EVENTS.index(USAGE_EVENT)
    for injected in (False, True):
        out, usage, reported = run(EVENTS[:cut], injected)
        assert out == b"".join(EVENTS[:cut])
        assert (usage, reported) == (
            Usage(output_tokens=math.ceil(len(STREAMED_TEXT.encode()) / 3)),
            False,
        )


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", **fields}


def test_estimate_of_one_prompt() -> None:
    estimate = OPENAI_COMPLETIONS.estimate(body(max_tokens=7), CAP)
    assert estimate.input_tokens == math.ceil(len("Say this is a test") / 3)
    assert (estimate.max_output_tokens, estimate.stream) == (7, False)
    assert estimate.model == "gpt-3.5-turbo-instruct"


def test_estimate_reserves_the_default_cap_when_none_is_set() -> None:
    assert OPENAI_COMPLETIONS.estimate(body(), CAP).max_output_tokens == 16


@pytest.mark.parametrize(
    ("fields", "output"),
    [
        ({"max_tokens": 100, "n": 3}, 300),
        ({"max_tokens": 100, "best_of": 5}, 500),  # all five are generated and billed
        ({"max_tokens": 100, "n": 2, "best_of": 4}, 400),
        ({"max_tokens": 100, "n": 2, "prompt": ["a", "b", "c"]}, 600),  # n for each prompt
        ({"n": 2, "prompt": [[1, 2], [3]]}, 2 * 2 * 16),
        ({"max_tokens": 0, "echo": True}, 0),  # scoring a prompt generates nothing
    ],
)
def test_estimate_multiplies_the_cap_by_every_completion_billed(
    fields: dict[str, Any], output: int
) -> None:
    assert OPENAI_COMPLETIONS.estimate(body(**fields), CAP).max_output_tokens == output


def test_token_ids_count_one_token_each() -> None:
    one = OPENAI_COMPLETIONS.estimate(body(prompt=[10_919, 420, 374, 264, 1296]), CAP)
    assert (one.input_tokens, one.max_output_tokens) == (5, 16)
    several = OPENAI_COMPLETIONS.estimate(body(prompt=[[10_919, 420], [374, 264, 1296]]), CAP)
    assert (several.input_tokens, several.max_output_tokens) == (5, 32)


def test_several_prompts_and_a_suffix_added_to_each() -> None:
    prompts = ["def add(a, b):", "def mul(a, b):"]
    estimate = OPENAI_COMPLETIONS.estimate(body(prompt=prompts, suffix="\n    return r"), CAP)
    assert estimate.input_tokens == math.ceil((2 * 14 + 2 * 13) / 3)


def test_prepare_writes_the_default_cap_into_an_uncapped_request() -> None:
    raw = json.dumps(body()).encode()
    forwarded, injected = OPENAI_COMPLETIONS.prepare(json.loads(raw), raw, CAP)
    assert (json.loads(forwarded), injected) == (body(max_tokens=16), False)


@pytest.mark.parametrize(
    "options", [None, {}, {"include_usage": False}, {"include_usage": False, "x": 1}]
)
def test_prepare_asks_for_usage_on_streams(options: dict[str, Any] | None) -> None:
    fields: dict[str, Any] = {"stream": True, "max_tokens": 50}
    if options is not None:
        fields["stream_options"] = options
    raw = json.dumps(body(**fields)).encode()
    forwarded, injected = OPENAI_COMPLETIONS.prepare(json.loads(raw), raw, CAP)
    assert injected is True
    expected = {**fields, "stream_options": {**(options or {}), "include_usage": True}}
    assert json.loads(forwarded) == body(**expected)


@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": 50},
        {"max_tokens": 0},
        {"max_tokens": 50, "stream": True, "stream_options": {"include_usage": True}},
    ],
)
def test_prepare_forwards_other_bodies_byte_for_byte(fields: dict[str, Any]) -> None:
    raw = json.dumps(body(**fields), indent=1).encode()
    forwarded, injected = OPENAI_COMPLETIONS.prepare(json.loads(raw), raw, CAP)
    assert (forwarded, injected) == (raw, False)
    assert forwarded is raw


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"prompt": None},
            "'prompt' must be a string, a list of strings, a list of token ids or a list of "
            "token-id lists; got null.",
        ),
        ({"prompt": ["a", 1]}, "'prompt[1]' must be a string; got the number 1."),
        (
            {"prompt": [1, True]},
            "'prompt[1]' must be a token id (a non-negative integer); got a boolean.",
        ),
        (
            {"prompt": [[1, 2], [3, "x"]]},
            "'prompt[1][1]' must be a token id (a non-negative integer); got a string.",
        ),
        (
            {"prompt": [{"text": "a"}]},
            "'prompt[0]' must be a string, a token id or a list of token ids; got an object.",
        ),
        ({"suffix": 5}, "'suffix' must be a string; got the number 5."),
        ({"max_tokens": -1}, "'max_tokens' must be a non-negative integer; got the number -1."),
        ({"best_of": 0}, "'best_of' must be a positive integer; got the number 0."),
        ({"n": "2"}, "'n' must be a positive integer; got a string."),
    ],
)
def test_bad_shapes_say_what_to_fix(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        OPENAI_COMPLETIONS.estimate(body(**fields), CAP)
    assert str(caught.value) == message
