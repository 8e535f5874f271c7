"""The meters' cut at a limit: where a stream is cut, what is counted, how each API ends."""

from __future__ import annotations

import json

from gateway.apis.anthropic import AnthropicStreamMeter
from gateway.apis.anthropic_complete import CompleteStreamMeter
from gateway.apis.openai import OpenAIStreamMeter
from gateway.apis.openai_completions import CompletionsStreamMeter
from gateway.apis.openai_responses import ResponsesStreamMeter
from gateway.apis.sse import sse_event
from gateway.metering import Usage


def anthropic_delta(text: str) -> bytes:
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    return sse_event("content_block_delta", delta)


START = sse_event(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)


def test_without_a_limit_nothing_is_cut() -> None:
    meter = AnthropicStreamMeter()
    stream = START + b"".join(anthropic_delta("word ") for _ in range(100))
    assert meter.feed(stream) is stream
    assert not meter.cut


def test_the_event_that_would_pass_the_limit_is_withheld_and_not_counted() -> None:
    meter = AnthropicStreamMeter(limit=3)
    deltas = [anthropic_delta("word ") for _ in range(5)]
    assert meter.feed(START + b"".join(deltas)) == START + b"".join(deltas[:3])
    assert meter.cut
    assert (meter.deltas, meter.text_bytes) == (3, 15)
    assert meter.feed(anthropic_delta("more")) == b""
    assert meter.flush() == b""


def test_an_event_begun_in_an_earlier_chunk_is_sent_whole_and_counted() -> None:
    meter = AnthropicStreamMeter(limit=1)
    first, second = anthropic_delta("one "), anthropic_delta("two ")
    # The second event's head went out with the first chunk (a pass-through): its tail is
    # sent too, so that the client never sees half an event.
    assert meter.feed(first + second[:10]) == first + second[:10]
    assert meter.feed(second[10:] + anthropic_delta("three")) == second[10:]
    assert meter.cut and meter.deltas == 2


def test_long_text_counts_at_six_bytes_a_token_when_that_is_more_than_its_deltas() -> None:
    meter = AnthropicStreamMeter(limit=10)
    long = anthropic_delta("x" * 60)  # one delta, but 10 tokens' worth at 6 bytes a token
    assert meter.feed(long) == long and not meter.cut
    assert meter.feed(anthropic_delta("y")) == b""
    assert meter.cut


def test_anthropic_ends_its_open_block_then_max_tokens() -> None:
    meter = AnthropicStreamMeter(limit=1)
    meter.feed(START + anthropic_delta("a") + anthropic_delta("b"))
    ending = meter.ending(Usage(input_tokens=5, output_tokens=1))
    assert ending == (
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
        b'"max_tokens","stop_sequence":null},"usage":{"output_tokens":1}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


def chat_chunk(index: int, content: str, finish: str | None = None) -> bytes:
    choice = {"index": index, "delta": {"content": content}, "finish_reason": finish}
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return sse_event(None, {**chunk, "choices": [choice]})


def test_chat_finishes_only_the_open_choices_and_hides_the_usage_it_asked_for() -> None:
    meter = OpenAIStreamMeter(injected=True, limit=2)
    out = meter.feed(chat_chunk(0, "a") + chat_chunk(1, "b", "stop") + chat_chunk(0, "c"))
    assert meter.cut and out == chat_chunk(0, "a") + chat_chunk(1, "b", "stop")
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    closing = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert meter.ending(Usage(3, 1)) == (
        sse_event(None, {**head, "choices": [closing]}) + b"data: [DONE]\n\n"
    )


def test_legacy_completions_finish_with_empty_text_and_length() -> None:
    meter = CompletionsStreamMeter(injected=False, limit=1)
    chunk = {"id": "x", "object": "text_completion", "created": 1, "model": "m"}
    text = [sse_event(None, {**chunk, "choices": [{"index": 0, "text": t}]}) for t in "ab"]
    meter.feed(b"".join(text))
    ending = meter.ending(Usage(input_tokens=2, cache_read_input_tokens=1, output_tokens=1))
    pieces = [json.loads(p[6:]) for p in ending.split(b"\n\n") if p.startswith(b"data: {")]
    assert pieces[0]["choices"] == [
        {"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}
    ]
    assert pieces[1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_legacy_complete_ends_typed_streams_with_max_tokens_and_closes_untyped_ones() -> None:
    typed = CompleteStreamMeter(limit=1)
    event = {"type": "completion", "id": "c", "model": "claude-2", "completion": "hi"}
    typed.feed(sse_event("completion", event) * 2)
    assert json.loads(typed.ending(Usage())[len(b"event: completion\ndata: ") :]) == {
        "type": "completion",
        "id": "c",
        "model": "claude-2",
        "completion": "",
        "stop_reason": "max_tokens",
        "stop": None,
    }
    untyped = CompleteStreamMeter(limit=1)
    cumulative = sse_event(None, {"completion": "a"}) + sse_event(None, {"completion": "ab"})
    assert untyped.feed(cumulative) == sse_event(None, {"completion": "a"})
    assert untyped.cut and untyped.ending(Usage()) == b""


def test_responses_streams_are_closed_after_the_last_whole_event() -> None:
    meter = ResponsesStreamMeter(limit=1)
    delta = sse_event(
        "response.output_text.delta", {"type": "response.output_text.delta", "delta": "x"}
    )
    assert meter.feed(delta * 2) == delta
    assert meter.cut and meter.ending(Usage()) == b""
