"""The gateway's exceptions, one tree.

    GatewayError
    ├── ConfigError            a process setting is missing or wrong (exit 2)
    ├── PolicyError            a policy file fails the check; carries file:line:col lines
    ├── WorkerError            a worker process of a replay or simulation failed (exit 1)
    ├── StorageError           the counter store did not answer (``kind``: down, timeout)
    │   └── StorageUnavailable    and a policy says refuse rather than guess → 503
    │       └── StorageBusy          every store connection is taken and the queue full:
    │                                back-pressure, never an outage → 503
    ├── UpstreamError          the model API could not be used (``sent``: the request
    │   │                          may have reached it, so it is never sent again)
    │   ├── UpstreamUnreachable   no connection was made: nothing was sent → 502
    │   └── UpstreamTimeout       no answer in time → 504
    └── ClientError            the caller's request is unusable → 4xx in the API's shape
        ├── BodyTooLarge          → 413
        ├── MalformedBody         → 400
        └── Unauthenticated       → 401

Foreign errors (redis, aiohttp, httpx) are translated once, at the boundary
that calls them, with ``raise ... from exc``.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A process setting is missing or wrong."""


class PolicyError(GatewayError):
    """A policy file (or set of files) fails the check.

    ``problems`` holds one ``file:line:col: path: message`` line each.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class WorkerError(GatewayError):
    """A worker process of a replay or simulation failed; says how (its traceback)."""


class StorageError(GatewayError):
    """The counter store could not be used.

    ``kind`` is ``down`` (refused, reset: the breaker opens at once) or ``timeout`` (no
    answer in time: only several in a row open it). ``maybe_applied``: the command may have
    run in the store all the same (it was sent), so a reserve must be compensated.
    """

    def __init__(self, message: str, *, kind: str = "down", maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.maybe_applied = maybe_applied


class StorageUnavailable(StorageError):
    """The store is down and an applicable policy has ``on_storage_error: closed``.

    The proxy answers 503 with ``retry-after: retry_after`` (seconds).
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageBusy(StorageUnavailable):
    """The store's connections are all in use and the wait for one is over: shed the
    request (503, retry shortly) rather than guess without the store. Never an outage."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after)
        self.kind = "busy"


class UpstreamError(GatewayError):
    status = 502
    sent = True  # any byte of the request may have reached the upstream


class UpstreamUnreachable(UpstreamError):
    status = 502
    sent = False


class UpstreamTimeout(UpstreamError):
    status = 504


class ClientError(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class BodyTooLarge(ClientError):
    status = 413
    error_type = "request_too_large"


class MalformedBody(ClientError):
    status = 400
    error_type = "invalid_request_error"


class Unauthenticated(ClientError):
    status = 401
    error_type = "authentication_error"
