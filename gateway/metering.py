"""What an exchange costs: the estimate made at admission and the usage reported at the end.

These small values travel between the wire-format parsers (``gateway.apis``),
the proxy and the budget engine; they know nothing of HTTP or storage.
"""

from __future__ import annotations

import enum

from gateway.values import value


@value
class RequestEstimate:
    """What a request is expected to cost, computed before it is forwarded."""

    model: str
    input_tokens: int
    max_output_tokens: int  # already multiplied by n (or best_of) where the API has one
    stream: bool
    requests: int = 1  # a message batch reserves one request per request it holds
    # The upstream works on without the connection (a batch, a background response): once
    # sent, it is charged in full whatever becomes of the answer.
    detached: bool = False
    # Its output cap can be lowered in the forwarded body (``WireFormat.recap``).
    shapeable: bool = False

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.max_output_tokens


@value
class Usage:
    """Tokens an exchange really used, as the upstream reported (or as estimated when cut short).

    ``input_tokens`` excludes cache creation and cache reads, as both APIs report it
    for Anthropic; for OpenAI ``prompt_tokens`` includes cached tokens and
    ``cache_read_input_tokens`` is informational only.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def billable_input_tokens(self) -> int:
        """Input that counts toward input-token limits: cache reads don't (as in Anthropic's)."""
        return self.input_tokens + self.cache_creation_input_tokens

    @property
    def tokens(self) -> int:
        return self.billable_input_tokens + self.output_tokens


class Outcome(enum.StrEnum):
    COMPLETE = "complete"  # the upstream finished the response
    CLIENT_GONE = "client_gone"  # the client disconnected before the end
    UPSTREAM_BROKE = "upstream_broke"  # the upstream stream failed mid-way
    # The upstream streamed past the output reserved; the gateway ended the stream there.
    CUT_AT_CAP = "cut_at_cap"
    UPSTREAM_ERROR = "upstream_error"  # failed once sent (timeout, reset): input stays charged
    UPSTREAM_UNREACHED = "upstream_unreached"  # no connection was made: nothing was sent
    REFUSED = "refused"  # the gateway refused it; nothing was forwarded


@value
class UsageRecord:
    """One finished exchange, handed to the usage hook exactly once."""

    request_id: str
    api: str
    path: str
    status: int
    outcome: Outcome
    estimate: RequestEstimate | None
    usage: Usage
    usage_reported: bool  # False when part of ``usage`` was estimated from streamed text
    duration_s: float
