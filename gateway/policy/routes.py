"""The route table: which requests the gateway forwards, and how each one is counted.

Closed by default: a request whose method and path match no route is answered 404 and never
forwarded. The shipped table below covers both APIs' generation routes and the harmless ones
around them; a policy set's ``routes`` section adds routes or replaces one of these (same
method and path), and ``meter: off`` takes one away. docs/policies.md documents the table.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Meter(enum.StrEnum):
    """How a route is counted. The metered ones name the wire format that reads its body."""

    ANTHROPIC_MESSAGES = "anthropic-messages"
    ANTHROPIC_MESSAGE_BATCHES = "anthropic-message-batches"
    ANTHROPIC_COMPLETE = "anthropic-complete"
    OPENAI_CHAT_COMPLETIONS = "openai-chat-completions"
    OPENAI_RESPONSES = "openai-responses"
    OPENAI_COMPLETIONS = "openai-completions"
    OPENAI_EMBEDDINGS = "openai-embeddings"
    PASS_THROUGH = "pass-through"  # identified, forwarded, debits nothing (models, token counts)
    REQUESTS_ONLY = "requests-only"  # identified, one request debited, tokens unseen (opt-in)
    BLOCKED = "blocked"  # answered 403 saying why: the gateway cannot see what it costs
    OFF = "off"  # removes a shipped route: answered 404 like any undeclared one

    @property
    def metered(self) -> bool:
        """Read by a wire format: an estimate is reserved and real usage settled."""
        return self not in _UNMETERED

    @property
    def forwarded(self) -> bool:
        return self not in (Meter.BLOCKED, Meter.OFF)

    @property
    def family(self) -> str | None:
        """The API a metered route belongs to: its error shape and rate-limit headers."""
        return self.value.partition("-")[0] if self.metered else None


_UNMETERED = frozenset({Meter.PASS_THROUGH, Meter.REQUESTS_ONLY, Meter.BLOCKED, Meter.OFF})


@dataclass(frozen=True, slots=True)
class Route:
    """One declared route. ``path`` matches exactly (case included), except that a
    ``{name}`` segment matches any one segment. ``errors`` names the API whose error shape
    the route answers in ("anthropic" or "openai")."""

    method: str
    path: str
    meter: Meter
    errors: str
    default_max_output_tokens: int | None = None  # inserted when the client sets no cap

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)


def errors_for_path(path: str) -> str:
    """Anthropic's error shape under its own routes, OpenAI's elsewhere (``/v1/models``,
    which both APIs have, included: a client tells the two apart by status alone)."""
    for prefix in ("/v1/messages", "/v1/complete"):
        # Also a path refused for what follows the prefix (/v1/messages#x, /v1/messages;x).
        if path.startswith(prefix) and not path[len(prefix) : len(prefix) + 1].isalnum():
            return "anthropic"
    return "openai"


# Default output caps: what a request with no cap of its own may write. 4,096 is a long
# answer on every current model; legacy OpenAI completions default to 16 in the API itself.
DEFAULT_CAPS = {
    Meter.ANTHROPIC_MESSAGES: 4096,
    Meter.ANTHROPIC_MESSAGE_BATCHES: 4096,
    Meter.ANTHROPIC_COMPLETE: 4096,
    Meter.OPENAI_CHAT_COMPLETIONS: 4096,
    Meter.OPENAI_RESPONSES: 4096,
    Meter.OPENAI_COMPLETIONS: 16,
}


def route(
    method: str, path: str, meter: Meter, cap: int | None = None, errors: str | None = None
) -> Route:
    """A route with the defaults filled in: the meter's cap and error shape."""
    errors = errors or meter.family or errors_for_path(path)
    return Route(method, path, meter, errors, cap or DEFAULT_CAPS.get(meter))


SHIPPED_ROUTES: tuple[Route, ...] = (
    route("POST", "/v1/messages", Meter.ANTHROPIC_MESSAGES),
    route("POST", "/v1/messages/count_tokens", Meter.PASS_THROUGH),
    route("POST", "/v1/messages/batches", Meter.ANTHROPIC_MESSAGE_BATCHES),
    route("GET", "/v1/messages/batches", Meter.PASS_THROUGH),
    route("GET", "/v1/messages/batches/{id}", Meter.PASS_THROUGH),
    route("DELETE", "/v1/messages/batches/{id}", Meter.PASS_THROUGH),
    route("GET", "/v1/messages/batches/{id}/results", Meter.PASS_THROUGH),
    route("POST", "/v1/messages/batches/{id}/cancel", Meter.PASS_THROUGH),
    route("POST", "/v1/complete", Meter.ANTHROPIC_COMPLETE),
    route("POST", "/v1/chat/completions", Meter.OPENAI_CHAT_COMPLETIONS),
    route("POST", "/v1/responses", Meter.OPENAI_RESPONSES),
    route("GET", "/v1/responses/{id}", Meter.PASS_THROUGH),
    route("DELETE", "/v1/responses/{id}", Meter.PASS_THROUGH),
    route("POST", "/v1/responses/{id}/cancel", Meter.PASS_THROUGH),
    route("GET", "/v1/responses/{id}/input_items", Meter.PASS_THROUGH),
    route("POST", "/v1/completions", Meter.OPENAI_COMPLETIONS),
    route("POST", "/v1/embeddings", Meter.OPENAI_EMBEDDINGS),
    route("GET", "/v1/models", Meter.PASS_THROUGH),
    route("GET", "/v1/models/{id}", Meter.PASS_THROUGH),
    # Their cost is in an uploaded file the gateway never sees: refused, saying so, until an
    # operator declares them (meter: requests-only) knowing that tokens go uncounted.
    route("POST", "/v1/batches", Meter.BLOCKED),
    route("POST", "/v1/files", Meter.BLOCKED),
)


def merged(shipped: Iterable[Route], declared: Iterable[Route]) -> tuple[Route, ...]:
    """``shipped`` with each declared route replacing the one of the same method and path
    (or added after them); ``meter: off`` entries removed."""
    table = {route.key: route for route in shipped}
    for route in declared:
        table[route.key] = route
    return tuple(route for route in table.values() if route.meter is not Meter.OFF)
