"""The ledger: what the mock really served, per answer-writing (✱) request.

Chaos tests add up real spend per account and organization from it and hold the gateway's
limits against that, not against the gateway's own counters. One ``Served`` entry per ✱
request, written when the request arrives (``outcome`` ``active``) and finished when its
answer ends:

- ``input_tokens``: the prompt as the mock counts it, once an answer was written; 0 for a
  refusal (400, ``x-mock-status``) and for a client that left during the latency.
- ``output_tokens``: a whole answer's tokens (times its choices; 0 for embeddings), or for a
  stream the tokens of the deltas generated before it was cut (``x-mock-break-after``) or
  its client left: a delta counts once written, whether or not it reached the client.
- ``outcome``: ``active``, ``completed``, ``cancelled`` (the client left first), ``broken``
  (cut by ``x-mock-break-after``) or ``failed`` (an error status, nothing generated).
- ``started_at`` and ``ended_at``: epoch seconds, so a test can see how many requests of
  one scope ran upstream at once.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from starlette.requests import Request


@dataclass(slots=True)
class Served:
    method: str
    path: str
    account_ids: tuple[str, ...]  # every x-account-id header, in order
    organization_ids: tuple[str, ...]
    stream: bool = False
    status: int | None = None
    outcome: str = "active"
    input_tokens: int = 0
    output_tokens: int = 0
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None

    def end(self, outcome: str, status: int | None = None) -> None:
        self.outcome = outcome
        if status is not None:
            self.status = status
        self.ended_at = time.time()

    def as_json(self) -> dict[str, object]:
        return {
            "method": self.method,
            "path": self.path,
            "x-account-id": list(self.account_ids),
            "x-organization-id": list(self.organization_ids),
            "stream": self.stream,
            "status": self.status,
            "outcome": self.outcome,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


class Ledger:
    """The last ``limit`` entries, oldest first: a benchmark cannot grow it without end."""

    def __init__(self, limit: int = 10_000) -> None:
        if limit < 1:
            raise ValueError(f"A ledger must keep at least one entry; got {limit}.")
        self._entries: deque[Served] = deque(maxlen=limit)

    def open(self, request: Request) -> Served:
        entry = Served(
            method=request.method,
            path=request.url.path,
            account_ids=tuple(request.headers.getlist("x-account-id")),
            organization_ids=tuple(request.headers.getlist("x-organization-id")),
        )
        self._entries.append(entry)
        return entry

    def entries(self) -> list[Served]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()
