"""The Anthropic Messages API (``POST /v1/messages``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.apis.base import (
    ErrorKind,
    PromptTally,
    capped,
    count_field,
    ietf_headers,
    optional_bool,
    optional_positive_int,
    parse_json_object,
    require_messages,
    require_model,
    tightest,
    tokens_for_bytes,
)
from gateway.apis.sse import SSEMeter, sse_event, text_size
from gateway.budget.decision import LimitStatus
from gateway.metering import RequestEstimate, Usage
from gateway.policy.model import Metric

_ERROR_TYPES = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.AUTHENTICATION: "authentication_error",
    ErrorKind.PERMISSION: "permission_error",
    ErrorKind.NOT_FOUND: "not_found_error",
    ErrorKind.REQUEST_TOO_LARGE: "request_too_large",
    ErrorKind.RATE_LIMIT: "rate_limit_error",
    ErrorKind.API_ERROR: "api_error",
    ErrorKind.OVERLOADED: "overloaded_error",
    ErrorKind.TIMEOUT: "api_error",  # Anthropic documents no timeout type
}

_HEADER_METRICS = (
    (Metric.REQUESTS, "requests"),
    (Metric.TOKENS, "tokens"),
    (Metric.INPUT_TOKENS, "input-tokens"),
    (Metric.OUTPUT_TOKENS, "output-tokens"),
)

_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)

_DELTA_TEXT_FIELDS = ("text", "thinking", "partial_json")

# Fields the estimate reads itself; every other one counts as JSON text.
_READ = frozenset({"model", "messages", "system", "tools", "max_tokens", "stream"})


def _usage(usage: Mapping[str, Any]) -> Usage:
    return Usage(**{key: count_field(usage, key) for key in _USAGE_FIELDS})


class AnthropicStreamMeter(SSEMeter):
    """Input and cache counts from ``message_start``; output from the last ``message_delta``."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__(filtering=False, limit=limit)
        self._counts = dict.fromkeys(_USAGE_FIELDS, 0)
        self._final = False
        self._open: object = None  # the index of a content block started and not stopped

    def on_data(self, data: bytes) -> bool:
        event = parse_json_object(data)
        if event is None:
            return True
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, Mapping):
                self.wrote(text_size(delta, _DELTA_TEXT_FIELDS))
        elif kind == "content_block_start":
            self._open = event.get("index")
        elif kind == "content_block_stop":
            self._open = None
        elif kind == "message_start":
            message = event.get("message")
            if isinstance(message, Mapping) and isinstance(usage := message.get("usage"), Mapping):
                self._take(usage)
        elif kind == "message_delta" and isinstance(usage := event.get("usage"), Mapping):
            self._take(usage)
            self._final = self._final or "output_tokens" in usage
        return True

    def _take(self, usage: Mapping[str, Any]) -> None:
        # every count Anthropic sends is cumulative: a later value replaces, never adds
        for key in _USAGE_FIELDS:
            if key in usage:
                self._counts[key] = count_field(usage, key)

    def result(self) -> tuple[Usage, bool]:
        counts = dict(self._counts)
        if not self._final:
            estimated = tokens_for_bytes(self.text_bytes)
            counts["output_tokens"] = max(counts["output_tokens"], estimated)
        return Usage(**counts), self._final

    def ending(self, usage: Usage) -> bytes:
        """As a message that reached ``max_tokens`` ends: its open block stopped, then
        ``message_delta`` with the stop reason and usage, then ``message_stop``."""
        events = []
        if self._open is not None:
            stop = {"type": "content_block_stop", "index": self._open}
            events.append(sse_event("content_block_stop", stop))
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": usage.output_tokens},
        }
        events.append(sse_event("message_delta", delta))
        events.append(sse_event("message_stop", {"type": "message_stop"}))
        return b"".join(events)


class AnthropicFormat:
    name = "anthropic"
    meter = "anthropic-messages"

    def estimate(self, body: Mapping[str, Any], default_cap: int) -> RequestEstimate:
        model = require_model(body)
        messages = require_messages(body)
        max_tokens = optional_positive_int(body, "max_tokens")
        stream = optional_bool(body, "stream")
        tally = PromptTally()
        tally.add_content(body.get("system"))
        tally.add_json(body.get("tools"))
        tally.add_messages(messages)
        tally.add_fields(body, _READ)
        return RequestEstimate(
            model=model,
            input_tokens=tally.tokens(),
            max_output_tokens=max_tokens or default_cap,
            stream=stream,
            shapeable=True,
        )

    def with_cap(self, body: Mapping[str, Any], cap: int) -> dict[str, Any]:
        return {**body, "max_tokens": cap}

    def prepare(self, body: Mapping[str, Any], raw: bytes, default_cap: int) -> tuple[bytes, bool]:
        return capped(body, raw, "max_tokens", default_cap), False

    def usage_from_json(self, data: bytes) -> Usage | None:
        answer = parse_json_object(data)
        usage = None if answer is None else answer.get("usage")
        return _usage(usage) if isinstance(usage, Mapping) else None

    def stream_meter(self, injected: bool, limit: int | None = None) -> AnthropicStreamMeter:
        return AnthropicStreamMeter(limit)

    def error_body(
        self, status: int, kind: ErrorKind, message: str, problem_type: str | None = None
    ) -> bytes:
        error = {"type": _ERROR_TYPES[kind], "message": message}
        if problem_type is not None:
            error["problem_type"] = problem_type
        return json.dumps({"type": "error", "error": error}).encode()

    def rate_limit_headers(
        self, statuses: Sequence[LimitStatus], now: float
    ) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        for metric, name in _HEADER_METRICS:
            status = tightest(statuses, (metric,))
            if status is None:
                continue
            prefix = f"anthropic-ratelimit-{name}"
            headers += [
                (f"{prefix}-limit", str(status.limit.amount)),
                (f"{prefix}-remaining", str(max(0, status.remaining))),
                (f"{prefix}-reset", rfc3339(now + max(0.0, status.reset_seconds))),
            ]
        return headers + ietf_headers(statuses)


def rfc3339(timestamp: float) -> str:
    """UTC, whole seconds, rounded up so a client waiting until then is never early."""
    moment = datetime.fromtimestamp(math.ceil(timestamp), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


ANTHROPIC = AnthropicFormat()
