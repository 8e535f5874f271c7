"""What every wire format provides, and the rules they share.

A wire format knows one API's JSON: how big a request looks before it is sent
(the estimate), what the answer says it used (usage, also from a stream), how an
error is spelled, and how rate-limit state is advertised in headers.
docs/metering.md states the estimation rule and the header choices.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.apis.media import file_part_tokens, image_part_tokens
from gateway.apis.sse import StreamMeter
from gateway.budget.decision import LimitStatus
from gateway.errors import MalformedBody
from gateway.metering import RequestEstimate, Usage
from gateway.policy.model import Metric

BYTES_PER_TOKEN = 3  # generous for English and code, so reservations rarely fall short
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators around each message
REQUEST_OVERHEAD_TOKENS = 3  # the assistant turn the model is primed with

_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})
_FILE_TYPES = frozenset({"document", "file", "input_file", "input_audio"})


class ErrorKind(enum.StrEnum):
    """What went wrong, in the gateway's words; each format spells it its own way."""

    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    REQUEST_TOO_LARGE = "request_too_large"
    RATE_LIMIT = "rate_limit"
    API_ERROR = "api_error"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"

    @property
    def status(self) -> int:
        """The status the gateway answers with by default (a bad gateway is 502, not 500)."""
        return _STATUS[self]

    @classmethod
    def from_status(cls, status: int) -> ErrorKind:
        """The kind an upstream (or mock) status means; unknown 4xx are invalid requests."""
        for kind, code in _STATUS.items():
            if code == status:
                return kind
        if status == 529:
            return cls.OVERLOADED
        return cls.INVALID_REQUEST if 400 <= status < 500 else cls.API_ERROR


_STATUS = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.AUTHENTICATION: 401,
    ErrorKind.PERMISSION: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.REQUEST_TOO_LARGE: 413,
    ErrorKind.RATE_LIMIT: 429,
    ErrorKind.API_ERROR: 500,
    ErrorKind.OVERLOADED: 503,
    ErrorKind.TIMEOUT: 504,
}


class ApiShape(Protocol):
    """How one API (a family: "anthropic" or "openai") spells errors and rate-limit state.
    Every route of the family answers in its shape, whatever meter reads its bodies."""

    name: str

    def error_body(
        self, status: int, kind: ErrorKind, message: str, problem_type: str | None = None
    ) -> bytes:
        """The error in this API's shape. Neither API puts the status in the body; it is
        passed so that the caller names the status it sends next to the kind.
        ``problem_type`` (RFC 9457's ``type``) goes in the error object as ``problem_type``,
        a field the official SDKs pass over."""
        ...

    def rate_limit_headers(
        self, statuses: Sequence[LimitStatus], now: float
    ) -> list[tuple[str, str]]: ...


class WireFormat(Protocol):
    """How one metered route's bodies read. ``name`` is the API family ("anthropic" or
    "openai": logs and metrics); ``meter`` is the route-table name
    (``gateway.policy.routes.Meter``)."""

    name: str
    meter: str

    def estimate(self, body: Mapping[str, Any], default_cap: int) -> RequestEstimate:
        """What the request may cost; ``default_cap`` is the output cap when it sets none.
        Raises MalformedBody with a sentence for a body the API would refuse."""
        ...

    def prepare(self, body: Mapping[str, Any], raw: bytes, default_cap: int) -> tuple[bytes, bool]:
        """The body to forward, and whether the gateway asked for a usage chunk the client
        must not see. A request without an output cap gets ``default_cap`` written in, so
        that no answer can be longer than what was reserved."""
        ...

    def with_cap(self, body: Mapping[str, Any], cap: int) -> dict[str, Any]:
        """``body`` asking for at most ``cap`` output tokens in all (an ``action: cap``
        policy's lower cap: divided among ``n`` choices where the API has them). Only
        called when the estimate was ``shapeable``."""
        ...

    def usage_from_json(self, data: bytes) -> Usage | None: ...

    def stream_meter(self, injected: bool, limit: int | None = None) -> StreamMeter:
        """``limit``: the output reserved; the stream is cut where it would pass it."""
        ...


TOO_DEEP = "The request body nests too deeply to read; no API request needs that depth."


def load_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or MalformedBody saying why not (deep nesting
    included: the JSON parser's recursion limit becomes a 400, never a 500)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedBody("The request body is not valid JSON.") from None
    except RecursionError:
        raise MalformedBody(TOO_DEEP) from None
    if not isinstance(body, dict):
        raise MalformedBody(f"The request body must be a JSON object; got {json_kind(body)}.")
    return body


def rewritten(body: Mapping[str, Any], raw: bytes, changes: Mapping[str, Any]) -> bytes:
    """``raw`` as it came when there is nothing to change, else ``body`` with ``changes``."""
    if not changes:
        return raw
    forwarded = {**body, **changes}
    return json.dumps(forwarded, ensure_ascii=False, separators=(",", ":")).encode()


def capped(body: Mapping[str, Any], raw: bytes, field: str, default_cap: int) -> bytes:
    """``raw``, or ``body`` with ``field`` set to ``default_cap`` when the client set no cap:
    the one ``prepare`` of the formats that only need a cap written in."""
    changes = {} if body.get(field) is not None else {field: default_cap}
    return rewritten(body, raw, changes)


def json_kind(value: object) -> str:
    """How a person reading the JSON would name the value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def tokens_for_bytes(size: int) -> int:
    return math.ceil(size / BYTES_PER_TOKEN)


def json_size(value: object) -> int:
    """UTF-8 bytes of ``value`` as compact JSON."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


# Messages and parts read one by one; past this many, the rest of a list is measured as one
# JSON text (C speed, and never less than its parts would count). Without the bound, a
# 10 MB body of empty parts cost 6 s of CPU on the event loop before admission.
MAX_WALKED = 10_000


@dataclass(slots=True)
class PromptTally:
    """Adds up a prompt by the rule in docs/metering.md."""

    text_bytes: int = 0
    messages: int = 0
    media_tokens: int = 0
    walked: int = 0

    def add_text(self, text: str) -> None:
        self.text_bytes += len(text.encode())

    def add_json(self, value: object) -> None:
        if value is not None:
            self.text_bytes += json_size(value)

    def add_fields(self, body: Mapping[str, Any], read: Collection[str]) -> None:
        """Every top-level field a format does not read itself, as JSON: what the model is
        given beside the prompt (a response schema, tool choices, stop sequences) counts."""
        rest = {key: value for key, value in body.items() if key not in read}
        if rest:
            self.add_json(rest)

    def add_messages(self, messages: Sequence[object]) -> None:
        for index, message in enumerate(messages):
            if self.walked >= MAX_WALKED:
                rest = messages[index:]
                self.messages += len(rest)
                self.add_json(list(rest))
                return
            if isinstance(message, Mapping):
                self.add_message(message)
            else:
                self.add_json(message)

    def add_message(self, message: Mapping[str, Any]) -> None:
        """One message: its content, plus any other field (tool calls, names) as JSON."""
        self.messages += 1
        self.walked += 1
        self.add_content(message.get("content"))
        rest = {key: value for key, value in message.items() if key not in ("role", "content")}
        if rest:
            self.add_json(rest)

    def add_content(self, content: object) -> None:
        """A message's content: a string, or a list of typed parts."""
        if isinstance(content, str):
            self.add_text(content)
        elif isinstance(content, list):
            for index, part in enumerate(content):
                if self.walked >= MAX_WALKED:
                    self.add_json(content[index:])
                    return
                self.walked += 1
                self._add_part(part)
        else:
            self.add_json(content)

    def _add_part(self, part: object) -> None:
        if not isinstance(part, Mapping):
            self.add_json(part)
            return
        kind = part.get("type")
        source = part.get("source")
        inline = None  # a text document's own words
        if isinstance(source, Mapping) and source.get("type") == "text":
            inline = source.get("data")
        if kind == "text" and isinstance(part.get("text"), str):
            self.add_text(part["text"])
        elif kind in _IMAGE_TYPES:
            self.media_tokens += image_part_tokens(part)
        elif kind in _FILE_TYPES:
            if isinstance(inline, str):
                self.add_text(inline)
            elif isinstance(source, Mapping) and source.get("type") == "content":
                self.add_content(source.get("content"))  # text and image blocks, as such
            else:
                self.media_tokens += file_part_tokens(part, tokens_for_bytes)
        elif "content" in part:
            # tool results nest content that may itself hold images
            self.add_json({key: value for key, value in part.items() if key != "content"})
            self.add_content(part["content"])
        else:
            self.add_json(part)

    def tokens(self) -> int:
        return (
            tokens_for_bytes(self.text_bytes)
            + MESSAGE_OVERHEAD_TOKENS * self.messages
            + REQUEST_OVERHEAD_TOKENS
            + self.media_tokens
        )


def require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise MalformedBody(
            f"'model' must be a non-empty string naming the model; got {json_kind(model)}."
        )
    return model


def require_messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise MalformedBody(
            f"'messages' must be a list of message objects; got {json_kind(messages)}."
        )
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise MalformedBody(
                f"'messages[{index}]' must be an object with 'role' and 'content'; "
                f"got {json_kind(message)}."
            )
    return messages


def optional_positive_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MalformedBody(f"'{key}' must be a positive integer; got {json_kind(value)}.")
    return value


def optional_bool(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise MalformedBody(f"'{key}' must be true or false; got {json_kind(value)}.")
    return value


def count_field(usage: Mapping[str, Any], key: str) -> int:
    """A token count from a usage object; anything not a non-negative integer counts 0."""
    value = usage.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def parse_json_object(data: bytes | str) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def tightest(statuses: Iterable[LimitStatus], metrics: Collection[Metric]) -> LimitStatus | None:
    """The status on ``metrics`` closest to exhaustion: lowest share left, then least left."""
    return min((s for s in statuses if s.metric in metrics), key=_pressure, default=None)


def _pressure(status: LimitStatus) -> tuple[float, int]:
    remaining = max(0, status.remaining)
    amount = status.limit.amount
    return (remaining / amount if amount > 0 else 0.0, remaining)


_IETF_METRICS = (
    (Metric.REQUESTS, None),  # "requests" is the draft's default unit
    (Metric.TOKENS, "x-tokens"),
    (Metric.INPUT_TOKENS, "x-input-tokens"),
    (Metric.OUTPUT_TOKENS, "x-output-tokens"),
    (Metric.CONCURRENT, "concurrent-requests"),
)


def ietf_headers(statuses: Sequence[LimitStatus]) -> list[tuple[str, str]]:
    """``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers).

    One item per metric, the tightest. Item names say only metric and window: never a
    policy name, scope or key, which could tell a client that it was linked to others.
    """
    policies: list[str] = []
    states: list[str] = []
    for metric, unit in _IETF_METRICS:
        status = tightest(statuses, (metric,))
        if status is None:
            continue
        window = status.limit.unit
        name = metric.value.replace("_", "-")
        if window is not None:
            name = f"{name}-{window.value}"
        policy = f'"{name}";q={status.limit.amount}'
        state = f'"{name}";r={max(0, status.remaining)}'
        if window is not None:
            policy += f";w={window.seconds}"
            state += f";t={math.ceil(max(0.0, status.reset_seconds))}"
        if unit is not None:
            policy += f';qu="{unit}"'
        policies.append(policy)
        states.append(state)
    if not policies:
        return []
    return [("ratelimit-policy", ", ".join(policies)), ("ratelimit", ", ".join(states))]
