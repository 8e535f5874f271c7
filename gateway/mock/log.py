"""The request log: the mock's own record of every HTTP request that reached it.

Security tests send odd request targets through the gateway and read ``GET /mock/log`` to
prove what was forwarded, so ``LogRequests`` records before anything routes: requests the
mock answers 404 or 405 are there too. The mock's control requests (``CONTROL``) are not.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

CONTROL = frozenset(
    {("GET", "/mock/log"), ("GET", "/mock/ledger"), ("GET", "/mock/stats"), ("POST", "/mock/reset")}
)


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    method: str
    target: str  # the raw path as received, then "?" and the raw query when there is one
    account_ids: tuple[str, ...]  # every x-account-id header, in order
    organization_ids: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "method": self.method,
            "target": self.target,
            "x-account-id": list(self.account_ids),
            "x-organization-id": list(self.organization_ids),
        }


class RequestLog:
    """The last ``limit`` requests, oldest first: a benchmark cannot grow it without end."""

    def __init__(self, limit: int = 10_000) -> None:
        if limit < 1:
            raise ValueError(f"A request log must keep at least one request; got {limit}.")
        self._entries: deque[LoggedRequest] = deque(maxlen=limit)

    def record(self, scope: Scope) -> None:
        raw: bytes | None = scope.get("raw_path")
        path = scope["path"] if raw is None else raw.decode("latin-1")
        if (scope["method"], path) in CONTROL:
            return
        query: bytes = scope.get("query_string", b"")
        self._entries.append(
            LoggedRequest(
                method=scope["method"],
                target=f"{path}?{query.decode('latin-1')}" if query else path,
                account_ids=_header_values(scope, b"x-account-id"),
                organization_ids=_header_values(scope, b"x-organization-id"),
            )
        )

    def entries(self) -> list[LoggedRequest]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()


def _header_values(scope: Scope, name: bytes) -> tuple[str, ...]:
    return tuple(value.decode("latin-1") for key, value in scope["headers"] if key.lower() == name)


class LogRequests:
    """Plain ASGI middleware: records each HTTP request in ``log``, then passes it on."""

    def __init__(self, app: ASGIApp, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.log.record(scope)
        await self.app(scope, receive, send)
