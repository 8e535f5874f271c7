"""Wire formats: one module per API the gateway meters; ``base`` holds what they share."""

from __future__ import annotations

from gateway.apis.anthropic import ANTHROPIC
from gateway.apis.base import ErrorKind, StreamMeter, WireFormat, load_body
from gateway.apis.openai import OPENAI

__all__ = [
    "ANTHROPIC",
    "OPENAI",
    "ErrorKind",
    "StreamMeter",
    "WireFormat",
    "error_format_for",
    "load_body",
    "wire_format_for",
]

_METERED: dict[str, WireFormat] = {
    "/v1/messages": ANTHROPIC,
    "/v1/chat/completions": OPENAI,
}

_ANTHROPIC_PREFIXES = ("/v1/messages", "/v1/complete")


def wire_format_for(method: str, path: str) -> WireFormat | None:
    """The format of a metered route: ``POST /v1/messages`` or ``POST /v1/chat/completions``.

    Paths match exactly (query ignored): no prefix mounts, no ``count_tokens``.
    """
    if method.upper() != "POST":
        return None
    return _METERED.get(path.partition("?")[0])


def error_format_for(path: str) -> WireFormat:
    """The shape errors take on any path: Anthropic's under its own routes, OpenAI's elsewhere."""
    path = path.partition("?")[0]
    for prefix in _ANTHROPIC_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return ANTHROPIC
    return OPENAI
