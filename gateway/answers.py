"""What the proxy answered, for the metrics: whose answer it was, its status, and for an
answer the gateway wrote itself, why.

An on-call must tell the gateway's own 429 from the model API's, and a storage outage from a
rate limit: every answer the gateway writes carries a ``Reason``, and an answer relayed from
the upstream carries none. Reasons and policy names are bounded label values; ids never are.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.apis import ErrorKind
from gateway.errors import ClientError, StorageBusy, StorageUnavailable, UpstreamError
from gateway.metering import Outcome


class Reason(enum.StrEnum):
    BAD_REQUEST = "bad_request"  # 400: a target read two ways, a malformed body
    AUTHENTICATION = "authentication"  # 401: no identity, an untrusted peer, an unknown key
    AUTHENTICATION_THROTTLED = "authentication_throttled"  # 429: too many failures from there
    NOT_FORWARDED = "not_forwarded"  # 403: a route whose cost the gateway cannot see
    NOT_FOUND = "not_found"  # 404: a route the policy set does not declare
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
    TOO_LARGE = "too_large"  # 413
    RATE_LIMIT = "rate_limit"  # 429: a policy's limit (its name is the policy label)
    STORAGE_UNAVAILABLE = "storage_unavailable"  # 503: store down, a policy closed without it
    STORAGE_BUSY = "storage_busy"  # 503: every store connection taken, the request shed
    INTERNAL_ERROR = "internal_error"  # 500: a bug; the log has it under the request id
    UPSTREAM_UNREACHABLE = "upstream_unreachable"  # 502: no connection, nothing sent
    UPSTREAM_FAILED = "upstream_failed"  # 502: the connection broke once the request was sent
    UPSTREAM_TIMEOUT = "upstream_timeout"  # 504


# The upstream's failures the gateway answers for: counted apart from refusals, since the
# request was (or was to be) forwarded and nobody refused it.
UPSTREAM_FAILURES = {
    Reason.UPSTREAM_UNREACHABLE: "unreachable",
    Reason.UPSTREAM_FAILED: "failed",
    Reason.UPSTREAM_TIMEOUT: "timeout",
}


@dataclass(frozen=True, slots=True)
class Answer:
    """One request's answer, handed to the metrics exactly once, whatever happened."""

    status: int  # 0: the client left before any answer
    reason: Reason | None  # None: the upstream's answer (or none at all)
    policy: str  # the refusing policy of a rate-limit refusal, else ""
    api: str  # the wire format, "" for a route that is not metered
    outcome: Outcome
    duration_s: float

    @property
    def answered_by(self) -> str:
        if self.reason is not None:
            return "gateway"
        return "upstream" if self.status else "none"


def reason_of(exc: ClientError | StorageUnavailable | UpstreamError) -> Reason:
    if isinstance(exc, StorageBusy):
        return Reason.STORAGE_BUSY
    if isinstance(exc, StorageUnavailable):
        return Reason.STORAGE_UNAVAILABLE
    if isinstance(exc, UpstreamError):
        if exc.status == 504:
            return Reason.UPSTREAM_TIMEOUT
        return Reason.UPSTREAM_FAILED if exc.sent else Reason.UPSTREAM_UNREACHABLE
    return {401: Reason.AUTHENTICATION, 413: Reason.TOO_LARGE}.get(exc.status, Reason.BAD_REQUEST)


def error_kind(exc: ClientError) -> ErrorKind:
    if exc.status == 401:
        return ErrorKind.AUTHENTICATION
    if exc.status == 413:
        return ErrorKind.REQUEST_TOO_LARGE
    if exc.status == 429:
        return ErrorKind.RATE_LIMIT
    return ErrorKind.INVALID_REQUEST


def upstream_sentence(exc: UpstreamError) -> str:
    if exc.status == 504:
        return "The model API did not answer in time; it was not asked again."
    if exc.sent:
        return (
            "The connection to the model API failed after the request was sent; it was not "
            "sent again, and its input was charged."
        )
    return "The model API could not be reached; nothing was sent or charged; try again shortly."


__all__ = [
    "UPSTREAM_FAILURES",
    "Answer",
    "Reason",
    "error_kind",
    "reason_of",
    "upstream_sentence",
]
