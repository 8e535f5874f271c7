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
from gateway.apis.anthropic_complete import ANTHROPIC_COMPLETE
from gateway.errors import MalformedBody
from gateway.metering import Usage

DATA = Path(__file__).parent / "data"
STREAM = (DATA / "anthropic_complete_stream.sse").read_bytes()
STREAMED_TEXT = "Here is a haiku about autumn:\n\nCrisp leaves drift and fall — café steam rising."
STREAM_USAGE = Usage(output_tokens=math.ceil(len(STREAMED_TEXT.encode()) / 3))
PROMPT = "\n\nHuman: Write a haiku about autumn.\n\nAssistant:"
CAP = 4096

COMPLETION = b"""{
  "type": "completion",
  "id": "compl_01Gq7XhZ2vB8nM4kT6pR9sWy",
  "completion": " Crisp leaves drift and fall,\\ncafe steam rising.",
  "stop_reason": "stop_sequence",
  "model": "claude-2.1",
  "stop": "\\n\\nHuman:",
  "log_id": "compl_01Gq7XhZ2vB8nM4kT6pR9sWy"
}"""


def run(chunks: list[bytes]) -> tuple[bytes, Usage, bool]:
    meter = ANTHROPIC_COMPLETE.stream_meter(injected=False)
    out = b"".join(meter.feed(chunk) for chunk in chunks) + meter.flush()
    usage, reported = meter.result()
    return out, usage, reported


def test_the_route_kind_reads_text_completions() -> None:
    assert FORMATS["anthropic-complete"] is ANTHROPIC_COMPLETE
    assert (ANTHROPIC_COMPLETE.name, ANTHROPIC_COMPLETE.meter) == (
        "anthropic",
        "anthropic-complete",
    )


def test_an_answer_reports_no_usage_so_the_reservation_is_charged() -> None:
    assert ANTHROPIC_COMPLETE.usage_from_json(COMPLETION) is None


def test_a_stream_passes_untouched_and_its_output_is_estimated() -> None:
    meter = ANTHROPIC_COMPLETE.stream_meter(injected=False)
    assert meter.feed(STREAM) is STREAM
    assert meter.flush() == b""
    assert meter.result() == (STREAM_USAGE, False)


def test_stream_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        assert run([STREAM[:cut], STREAM[cut:]]) == (STREAM, STREAM_USAGE, False), cut


@given(st.lists(st.integers(0, len(STREAM)), max_size=30), st.booleans())
def test_stream_split_anywhere(cuts: list[int], crlf: bool) -> None:
    stream = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    bounds = sorted({0, len(stream), *(min(cut * 2, len(stream)) for cut in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(chunks) == (stream, STREAM_USAGE, False)


def test_an_old_version_stream_of_whole_completions_counts_the_last() -> None:
    texts = [" Crisp", " Crisp leaves", " Crisp leaves drift."]
    events = [f"data: {json.dumps({'completion': text})}\n\n".encode() for text in texts]
    done = b"data: [DONE]\n\n"
    assert run([*events, done])[1:] == (Usage(output_tokens=math.ceil(20 / 3)), False)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-2.1", "prompt": PROMPT, **fields}


def test_estimate_counts_the_prompt_and_its_cap() -> None:
    estimate = ANTHROPIC_COMPLETE.estimate(body(max_tokens_to_sample=300, stream=True), CAP)
    assert estimate.input_tokens == math.ceil(len(PROMPT) / 3)
    assert (estimate.model, estimate.max_output_tokens, estimate.stream) == (
        "claude-2.1",
        300,
        True,
    )


def test_estimate_reserves_the_default_cap_when_none_is_set() -> None:
    assert ANTHROPIC_COMPLETE.estimate(body(), CAP).max_output_tokens == CAP


def test_prepare_writes_the_default_cap_into_an_uncapped_request() -> None:
    raw = json.dumps(body()).encode()
    forwarded, injected = ANTHROPIC_COMPLETE.prepare(json.loads(raw), raw, CAP)
    assert (json.loads(forwarded), injected) == (body(max_tokens_to_sample=CAP), False)


def test_prepare_forwards_a_capped_request_byte_for_byte() -> None:
    raw = json.dumps(body(max_tokens_to_sample=256, stream=True), indent=1).encode()
    forwarded, injected = ANTHROPIC_COMPLETE.prepare(json.loads(raw), raw, CAP)
    assert forwarded is raw
    assert injected is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"prompt": None},
            "'prompt' must be a string in the form '\\n\\nHuman: ...\\n\\nAssistant:'; got null.",
        ),
        (
            {"prompt": [{"role": "user"}]},
            "'prompt' must be a string in the form '\\n\\nHuman: ...\\n\\nAssistant:'; got a list.",
        ),
        (
            {"max_tokens_to_sample": 0},
            "'max_tokens_to_sample' must be a positive integer; got the number 0.",
        ),
        ({"model": 2}, "'model' must be a non-empty string naming the model; got the number 2."),
    ],
)
def test_bad_shapes_say_what_to_fix(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        ANTHROPIC_COMPLETE.estimate(body(**fields), CAP)
    assert str(caught.value) == message
