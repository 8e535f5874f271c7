"""One exchange's state, from the request's first byte to its usage record: shared by the
proxy, the relay and the shielded ending."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from gateway.admission import Admission
from gateway.apis import ApiShape
from gateway.metering import Outcome, RequestEstimate, Usage

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]


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
