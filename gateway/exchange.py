"""One exchange's state, from the request's first byte to its usage record: shared by the
proxy, the relay and the shielded ending."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from gateway.admission import Admission
from gateway.answers import Reason
from gateway.apis import ApiShape
from gateway.errors import BodyTooLarge
from gateway.metering import Outcome, RequestEstimate, Usage

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]


class ClientGone(Exception):
    """The client disconnected while its body was still being read."""


@dataclass(slots=True)
class Exchange:
    """Per-request state, shared by the exchange and its shielded ending."""

    request_id: str
    path: str
    errors: ApiShape  # the called API: the shape of errors and rate-limit headers
    started: float
    status: int = 0
    outcome: Outcome = Outcome.COMPLETE
    response_started: bool = False
    response_done: bool = False
    estimate: RequestEstimate | None = None
    admission: Admission | None = None
    usage: Usage = field(default_factory=Usage)
    usage_reported: bool = True
    api: str = ""
    sent: bool = False  # the upstream request was started: it may have been read there
    body_read: anyio.Event = field(default_factory=anyio.Event)
    reason: Reason | None = None  # why the gateway answered itself; None: the upstream did
    policy: str = ""  # the policy that refused it, for the refusals metric


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or BodyTooLarge past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(
                f"The request body exceeds the gateway's limit of {limit} bytes; send a "
                "smaller request."
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
