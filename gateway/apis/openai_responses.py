"""The OpenAI Responses API (``POST /v1/responses``).

The estimate counts ``instructions``, ``tools``, a stored ``prompt`` reference (its
variables are text the model reads) and ``input``: a string (one user message) or a list
of items. Messages count like chat messages (``input_text`` and ``output_text`` parts as
text, ``input_image`` as an image, ``input_file`` as a file); a tool's ``output`` counts
like a message's content; any other item (a function call, a reasoning item, a reference)
counts as JSON. Earlier turns named by ``previous_response_id`` or ``conversation`` live
upstream and are not seen: the reservation may fall short there, and the reported usage
settles it. The cap is ``max_output_tokens`` (reasoning included), written in when absent.

Usage counts ``input_tokens`` with cached tokens moved out, as for chat. A stream always
ends with its usage (in ``response.completed``, ``response.incomplete`` or
``response.failed``), so nothing is injected and nothing removed.

A request with ``"background": true`` is answered at once, queued, with no usage: the
answer then yields None and the proxy charges the full reservation (input estimate plus
the cap). The work is done later and fetched through unmetered GET routes, so charging at
submission is the only point at which the gateway can. For the same reason a background
*stream* cut short is charged its cap, not just the text that came before the cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.apis.base import (
    MAX_WALKED,
    PromptTally,
    capped,
    count_field,
    json_kind,
    optional_bool,
    optional_positive_int,
    parse_json_object,
    require_model,
    tokens_for_bytes,
)
from gateway.apis.openai import usage_moving_cached
from gateway.apis.sse import SSEMeter
from gateway.errors import MalformedBody
from gateway.metering import RequestEstimate, Usage

# Parts renamed to the shapes PromptTally knows (docs/metering.md), so that text counts as
# text and a screenshot as an image, not as the JSON of its base64 data.
_TEXT_PARTS = frozenset({"input_text", "output_text"})
_IMAGE_PARTS = frozenset({"computer_screenshot"})

# Text the model writes, streamed; the matching ".done" events repeat it whole.
_DELTA_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.mcp_call_arguments.delta",
        "response.code_interpreter_call_code.delta",
    }
)
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _usage(usage: Mapping[str, Any]) -> Usage:
    return usage_moving_cached(usage, "input_tokens", "output_tokens")


def _part(part: object) -> object:
    if not isinstance(part, Mapping):
        return part
    kind = part.get("type")
    if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind in _IMAGE_PARTS:
        return {**part, "type": "input_image"}
    return part


def _content(content: object) -> object:
    if isinstance(content, list):
        return [_part(part) for part in content]
    if isinstance(content, Mapping):
        return [_part(content)]
    return content


def _add_input(tally: PromptTally, value: object) -> None:
    if value is None:
        return
    if isinstance(value, str):
        tally.add_message({"role": "user", "content": value})
        return
    if not isinstance(value, list):
        raise MalformedBody(
            f"'input' must be a string or a list of input items; got {json_kind(value)}."
        )
    for index, item in enumerate(value):
        if tally.walked >= MAX_WALKED:
            tally.add_json(value[index:])
            return
        if not isinstance(item, Mapping):
            raise MalformedBody(
                f"'input[{index}]' must be an object (a message or another input item); "
                f"got {json_kind(item)}."
            )
        if "content" in item:
            tally.add_message({**item, "content": _content(item["content"])})
        elif "output" in item:
            rest = {key: field for key, field in item.items() if key != "output"}
            tally.add_message({**rest, "content": _content(item["output"])})
        else:
            tally.add_message(item)


# Fields the estimate reads itself; every other one (a text format schema, tool choices)
# counts as JSON text.
_READ = frozenset(
    {"model", "input", "instructions", "tools", "prompt", "max_output_tokens", "stream"}
)


class ResponsesStreamMeter(SSEMeter):
    """Usage from the final ``response``; output estimated from deltas if it never comes.

    A background response runs on upstream after its stream is cut, and its whole output
    can be fetched later (unmetered): cut short, it is charged its cap, which every event's
    ``response`` echoes.
    """

    def __init__(self, limit: int | None = None) -> None:
        super().__init__(filtering=False, limit=limit)
        self._usage: Usage | None = None
        self._background_cap = 0

    def on_data(self, data: bytes) -> bool:
        event = parse_json_object(data)
        if event is None:
            return True
        kind = event.get("type")
        if kind in _DELTA_EVENTS and isinstance(delta := event.get("delta"), str):
            self.wrote(len(delta.encode()))
        elif isinstance(response := event.get("response"), Mapping):
            if response.get("background") is True:
                self._background_cap = count_field(response, "max_output_tokens")
            usage = response.get("usage")
            if kind in _FINAL_EVENTS and isinstance(usage, Mapping):
                self._usage = _usage(usage)
        return True

    def result(self) -> tuple[Usage, bool]:
        if self._usage is not None:
            return self._usage, True
        output = max(tokens_for_bytes(self.text_bytes), self._background_cap)
        return Usage(output_tokens=output), False


class ResponsesFormat:
    name = "openai"
    meter = "openai-responses"

    def estimate(self, body: Mapping[str, Any], default_cap: int) -> RequestEstimate:
        model = require_model(body)
        cap = optional_positive_int(body, "max_output_tokens")
        stream = optional_bool(body, "stream")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise MalformedBody(f"'instructions' must be a string; got {json_kind(instructions)}.")
        tally = PromptTally()
        tally.add_text(instructions or "")
        tally.add_json(body.get("tools"))
        tally.add_json(body.get("prompt"))
        _add_input(tally, body.get("input"))
        tally.add_fields(body, _READ)
        return RequestEstimate(
            model=model,
            input_tokens=tally.tokens(),
            max_output_tokens=cap or default_cap,
            stream=stream,
            detached=body.get("background") is True,
            shapeable=True,
        )

    def with_cap(self, body: Mapping[str, Any], cap: int) -> dict[str, Any]:
        return {**body, "max_output_tokens": cap}

    def prepare(self, body: Mapping[str, Any], raw: bytes, default_cap: int) -> tuple[bytes, bool]:
        return capped(body, raw, "max_output_tokens", default_cap), False

    def usage_from_json(self, data: bytes) -> Usage | None:
        answer = parse_json_object(data)
        usage = None if answer is None else answer.get("usage")
        return _usage(usage) if isinstance(usage, Mapping) else None

    def stream_meter(self, injected: bool, limit: int | None = None) -> ResponsesStreamMeter:
        return ResponsesStreamMeter(limit)


OPENAI_RESPONSES = ResponsesFormat()
