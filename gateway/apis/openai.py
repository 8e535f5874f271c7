"""The OpenAI Chat Completions API (``POST /v1/chat/completions``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.apis.base import (
    ErrorKind,
    PromptTally,
    count_field,
    ietf_headers,
    optional_bool,
    optional_positive_int,
    parse_json_object,
    require_messages,
    require_model,
    rewritten,
    tightest,
    tokens_for_bytes,
)
from gateway.apis.sse import SSEMeter, sse_event, text_size
from gateway.budget.decision import LimitStatus
from gateway.metering import RequestEstimate, Usage
from gateway.policy.model import Metric

# (type, code); OpenAI's own 429s put "requests" or "tokens" in type, which a
# refusal naming its limit in the message does not need
_ERRORS: dict[ErrorKind, tuple[str, str | None]] = {
    ErrorKind.INVALID_REQUEST: ("invalid_request_error", None),
    ErrorKind.AUTHENTICATION: ("invalid_request_error", "invalid_api_key"),
    ErrorKind.PERMISSION: ("invalid_request_error", "permission_denied"),
    ErrorKind.NOT_FOUND: ("invalid_request_error", "not_found"),
    ErrorKind.REQUEST_TOO_LARGE: ("invalid_request_error", "request_too_large"),
    ErrorKind.RATE_LIMIT: ("rate_limit_exceeded", "rate_limit_exceeded"),
    ErrorKind.API_ERROR: ("server_error", None),
    ErrorKind.OVERLOADED: ("server_error", "service_unavailable"),
    ErrorKind.TIMEOUT: ("server_error", "timeout"),
}

_HEADER_METRICS = (
    ((Metric.REQUESTS,), "requests"),
    ((Metric.TOKENS, Metric.INPUT_TOKENS, Metric.OUTPUT_TOKENS), "tokens"),
)

_DELTA_TEXT_FIELDS = ("content", "refusal", "reasoning_content")

# Fields the estimate reads itself; every other one (a response_format schema, a predicted
# output, stop sequences) counts as JSON text.
_READ = frozenset(
    {
        "model",
        "messages",
        "tools",
        "functions",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stream",
        "stream_options",
    }
)


def usage_moving_cached(usage: Mapping[str, Any], input_key: str, output_key: str) -> Usage:
    """OpenAI's input count (``prompt_tokens`` or ``input_tokens``) includes the cached
    tokens given in ``<input_key>_details``; they move to ``cache_read_input_tokens``."""
    total = count_field(usage, input_key)
    details = usage.get(f"{input_key}_details")
    cached = count_field(details, "cached_tokens") if isinstance(details, Mapping) else 0
    cached = min(total, cached)
    return Usage(
        input_tokens=total - cached,
        output_tokens=count_field(usage, output_key),
        cache_read_input_tokens=cached,
    )


def _usage(usage: Mapping[str, Any]) -> Usage:
    return usage_moving_cached(usage, "prompt_tokens", "completion_tokens")


def _arguments_size(calls: object) -> int:
    if not isinstance(calls, list):
        return 0
    size = 0
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping) and isinstance(args := function.get("arguments"), str):
            size += len(args.encode())
    return size


class OpenAIStreamMeter(SSEMeter):
    """Usage from the final usage-only chunk, which is removed when the gateway asked for it."""

    def __init__(self, injected: bool, limit: int | None = None) -> None:
        super().__init__(filtering=injected, limit=limit)
        self._usage: Usage | None = None
        self._wants_usage = not injected  # the client asked for the usage chunk itself
        self._head: dict[str, Any] = {}  # id, object, created, model: for a closing chunk
        self._open: dict[object, None] = {}  # choice indexes not finished, in order seen

    def on_data(self, data: bytes) -> bool:
        chunk = parse_json_object(data)  # "[DONE]" is not an object
        if chunk is None:
            return True
        if not self._head:
            self._head = {key: chunk[key] for key in _HEAD if key in chunk}
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, Mapping):
                self.count_choice(choice)
                if choice.get("finish_reason") is None:
                    self._open.setdefault(choice.get("index"))
                else:
                    self._open.pop(choice.get("index"), None)
        usage = chunk.get("usage")
        if not isinstance(usage, Mapping):
            return True
        self._usage = _usage(usage)
        # some compatible servers put usage on a chunk with content: that one must pass
        return isinstance(choices, list) and bool(choices)

    def count_choice(self, choice: Mapping[str, Any]) -> None:
        """Adds a streamed choice's text, for the estimate of a stream cut short."""
        if isinstance(delta := choice.get("delta"), Mapping):
            size = text_size(delta, _DELTA_TEXT_FIELDS)
            size += _arguments_size(delta.get("tool_calls"))
            self.wrote(size + _arguments_size([{"function": delta.get("function_call")}]))

    def result(self) -> tuple[Usage, bool]:
        if self._usage is not None:
            return self._usage, True
        return Usage(output_tokens=tokens_for_bytes(self.text_bytes)), False

    def closing_choice(self, index: object) -> dict[str, Any]:
        return {"index": index, "delta": {}, "logprobs": None, "finish_reason": "length"}

    def ending(self, usage: Usage) -> bytes:
        """As a stream that reached its cap ends: a chunk finishing every open choice with
        ``length``, the usage chunk if the client asked for one, then ``[DONE]``."""
        choices = [self.closing_choice(index) for index in self._open]
        events = [sse_event(None, {**self._head, "choices": choices})]
        if self._wants_usage:
            prompt = usage.input_tokens + usage.cache_read_input_tokens
            counts = {
                "prompt_tokens": prompt,
                "completion_tokens": usage.output_tokens,
                "total_tokens": prompt + usage.output_tokens,
            }
            events.append(sse_event(None, {**self._head, "choices": [], "usage": counts}))
        events.append(sse_event(None, "[DONE]"))
        return b"".join(events)


_HEAD = ("id", "object", "created", "model", "system_fingerprint")


def ask_for_usage(body: Mapping[str, Any], changes: dict[str, Any]) -> bool:
    """On a stream that did not ask for the final usage chunk, ask for it (in ``changes``);
    True when it was asked for here, so the meter removes the chunk the client never
    asked for."""
    if body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage") is True:
        return False
    given = options if isinstance(options, Mapping) else {}
    changes["stream_options"] = {**given, "include_usage": True}
    return True


class OpenAIFormat:
    name = "openai"
    meter = "openai-chat-completions"

    def estimate(self, body: Mapping[str, Any], default_cap: int) -> RequestEstimate:
        model = require_model(body)
        messages = require_messages(body)
        cap = optional_positive_int(body, "max_completion_tokens")
        legacy_cap = optional_positive_int(body, "max_tokens")
        # Both set: OpenAI refuses the request, a compatible server may honour either.
        given = max(cap or 0, legacy_cap or 0)
        choices = optional_positive_int(body, "n") or 1
        stream = optional_bool(body, "stream")
        tally = PromptTally()
        tally.add_json(body.get("tools"))
        tally.add_json(body.get("functions"))
        tally.add_messages(messages)
        tally.add_fields(body, _READ)
        return RequestEstimate(
            model=model,
            input_tokens=tally.tokens(),
            max_output_tokens=(given or default_cap) * choices,
            stream=stream,
            shapeable=True,
        )

    def with_cap(self, body: Mapping[str, Any], cap: int) -> dict[str, Any]:
        each = max(1, cap // (optional_positive_int(body, "n") or 1))
        if body.get("max_tokens") is not None and body.get("max_completion_tokens") is None:
            return {**body, "max_tokens": each}
        changed = {**body, "max_completion_tokens": each}
        if body.get("max_tokens") is not None:
            changed["max_tokens"] = each
        return changed

    def prepare(self, body: Mapping[str, Any], raw: bytes, default_cap: int) -> tuple[bytes, bool]:
        """Writes the default cap into an uncapped request, and asks for the final usage
        chunk on streams that did not (the client will not see it)."""
        changes: dict[str, Any] = {}
        if body.get("max_completion_tokens") is None and body.get("max_tokens") is None:
            changes["max_completion_tokens"] = default_cap
        injected = ask_for_usage(body, changes)
        return rewritten(body, raw, changes), injected

    def usage_from_json(self, data: bytes) -> Usage | None:
        answer = parse_json_object(data)
        usage = None if answer is None else answer.get("usage")
        return _usage(usage) if isinstance(usage, Mapping) else None

    def stream_meter(self, injected: bool, limit: int | None = None) -> OpenAIStreamMeter:
        return OpenAIStreamMeter(injected, limit)

    def error_body(
        self, status: int, kind: ErrorKind, message: str, problem_type: str | None = None
    ) -> bytes:
        error_type, code = _ERRORS[kind]
        error = {"message": message, "type": error_type, "param": None, "code": code}
        if problem_type is not None:
            error["problem_type"] = problem_type
        return json.dumps({"error": error}).encode()

    def rate_limit_headers(
        self, statuses: Sequence[LimitStatus], now: float
    ) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        for metrics, name in _HEADER_METRICS:
            status = tightest(statuses, metrics)
            if status is None:
                continue
            headers += [
                (f"x-ratelimit-limit-{name}", str(status.limit.amount)),
                (f"x-ratelimit-remaining-{name}", str(max(0, status.remaining))),
                (f"x-ratelimit-reset-{name}", go_duration(status.reset_seconds)),
            ]
        return headers + ietf_headers(statuses)


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes it (Go's style): ``250ms``, ``1.5s``, ``6m0s``, ``1h2m3s``.

    Rounded up to the millisecond so a client waiting that long is never early.
    """
    millis = math.ceil(round(max(0.0, seconds) * 1000, 6))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


OPENAI = OpenAIFormat()
