"""Anthropic's legacy Text Completions API (``POST /v1/complete``).

The prompt is one string that already holds the whole conversation (``\\n\\nHuman: …
\\n\\nAssistant:``), so it counts ``ceil(bytes / 3)`` with no message overhead. The cap is
``max_tokens_to_sample``, written in when absent.

This API reports no usage at all. ``usage_from_json`` sees only the answer, which gives the
output's text but not the input, and a Usage with input 0 would let the prompt go free; so
it returns None, and a non-streamed answer is charged its full reservation (input estimate
plus ``max_tokens_to_sample``). A stream's meter estimates output from the text streamed and
says it was not reported, so the proxy adds the input estimate to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.apis.base import (
    capped,
    json_kind,
    optional_bool,
    optional_positive_int,
    parse_json_object,
    require_model,
    tokens_for_bytes,
)
from gateway.apis.sse import SSEMeter, sse_event
from gateway.errors import MalformedBody
from gateway.metering import RequestEstimate, Usage


class CompleteStreamMeter(SSEMeter):
    """Output estimated from ``completion`` events; never reported.

    Since API version 2023-06-01 each event's ``completion`` is the new text only; before it,
    events had no ``type`` and each carried the whole completion so far (only its growth
    counts).
    """

    def __init__(self, limit: int | None = None) -> None:
        super().__init__(filtering=False, limit=limit)
        self._whole_bytes = 0  # the latest cumulative completion (old API versions)
        self._head: dict[str, Any] = {}  # id and model of a typed stream, for its ending

    def on_data(self, data: bytes) -> bool:
        event = parse_json_object(data)
        text = None if event is None else event.get("completion")
        if event is None or not isinstance(text, str):
            return True
        size = len(text.encode())
        if event.get("type") == "completion":
            self._head = {key: event[key] for key in ("id", "model") if key in event}
            self.wrote(size)
        elif "type" not in event:
            self.wrote(size - self._whole_bytes)
            self._whole_bytes = size
        return True

    def result(self) -> tuple[Usage, bool]:
        return Usage(output_tokens=tokens_for_bytes(self.text_bytes)), False

    def ending(self, usage: Usage) -> bytes:
        """A typed stream ends as one that reached its cap: a last, empty ``completion``
        with ``stop_reason: max_tokens``. An untyped one (cumulative text) just closes."""
        if not self._head:
            return b""
        last = {"type": "completion", **self._head, "completion": "", "stop_reason": "max_tokens"}
        return sse_event("completion", {**last, "stop": None})


class CompleteFormat:
    name = "anthropic"
    meter = "anthropic-complete"

    def estimate(self, body: Mapping[str, Any], default_cap: int) -> RequestEstimate:
        model = require_model(body)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise MalformedBody(
                "'prompt' must be a string in the form "
                f"'\\n\\nHuman: ...\\n\\nAssistant:'; got {json_kind(prompt)}."
            )
        cap = optional_positive_int(body, "max_tokens_to_sample")
        return RequestEstimate(
            model=model,
            input_tokens=tokens_for_bytes(len(prompt.encode())),
            max_output_tokens=cap or default_cap,
            stream=optional_bool(body, "stream"),
            shapeable=True,
        )

    def with_cap(self, body: Mapping[str, Any], cap: int) -> dict[str, Any]:
        return {**body, "max_tokens_to_sample": cap}

    def prepare(self, body: Mapping[str, Any], raw: bytes, default_cap: int) -> tuple[bytes, bool]:
        return capped(body, raw, "max_tokens_to_sample", default_cap), False

    def usage_from_json(self, data: bytes) -> Usage | None:
        return None

    def stream_meter(self, injected: bool, limit: int | None = None) -> CompleteStreamMeter:
        return CompleteStreamMeter(limit)


ANTHROPIC_COMPLETE = CompleteFormat()
