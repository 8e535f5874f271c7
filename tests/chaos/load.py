"""Load for chaos tests: Anthropic Messages requests over real HTTP, bounded in number,
concurrency and time.

Each ``Shot`` is one request of one ``Kind``. The gateway knows who asks from
``x-chaos-account`` and ``x-chaos-org`` (the identity headers of ``policies.IDENTITY``; it
keeps those to itself); the same ids go as ``x-account-id`` and ``x-organization-id``, which
it forwards, so the mock's ledger can say whose spend each answer was.

A refusal for requests in flight says the limit frees up soon: a shot with ``retry_busy``
is sent again (at most ``BUSY_RETRIES`` times, after a short random pause), as a client
honouring the hint would, so that budgets on requests and tokens are driven to their limit.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

BUSY_RETRIES = 40
BUSY_MARK = "requests in flight"  # how a refusal for ``concurrent`` says so
DISCONNECT_AFTER_BYTES = 400  # past message_start and into the deltas


class Kind(enum.Enum):
    JSON = "json"  # a whole answer
    STREAM = "stream"  # SSE, read to the end
    DISCONNECT = "disconnect"  # SSE, the client leaves after the first bytes
    ERROR = "error"  # the upstream answers 500 (x-mock-status)
    CUT = "cut"  # the upstream drops the stream after 3 deltas (x-mock-break-after)


@dataclass(frozen=True, slots=True)
class Shot:
    account: str
    organization: str
    kind: Kind = Kind.JSON
    max_tokens: int = 16
    latency: float | None = None  # x-mock-latency: seconds before the upstream answers
    retry_busy: bool = False  # send again after a refusal for requests in flight

    def headers(self) -> dict[str, str]:
        headers = {
            "x-chaos-account": self.account,
            "x-chaos-org": self.organization,
            "x-account-id": self.account,
            "x-organization-id": self.organization,
        }
        if self.kind is Kind.ERROR:
            headers["x-mock-status"] = "500"
        if self.kind is Kind.CUT:
            headers["x-mock-break-after"] = "3"
        if self.latency is not None:
            headers["x-mock-latency"] = str(self.latency)
        return headers

    def body(self) -> dict[str, object]:
        streamed = self.kind in (Kind.STREAM, Kind.DISCONNECT, Kind.CUT)
        return {
            "model": "chaos-model",
            "max_tokens": self.max_tokens,
            "stream": streamed,
            "messages": [{"role": "user", "content": f"Chaos from {self.account}, go."}],
        }


@dataclass(slots=True)
class Outcome:
    shot: Shot
    replica: int
    status: int | None = None  # None: no status line came back
    busy_refusals: int = 0
    error: str = ""

    @property
    def refused(self) -> bool:
        return self.status == 429


def client(base_url: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx.Timeout(30.0, connect=5.0)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)


async def _once(http: httpx.AsyncClient, shot: Shot) -> tuple[int, str]:
    """Status and, for a refusal, its body."""
    request = http.build_request("POST", "/v1/messages", json=shot.body(), headers=shot.headers())
    response = await http.send(request, stream=True)
    try:
        if shot.kind is Kind.DISCONNECT and response.status_code == 200:
            seen = 0
            async for chunk in response.aiter_raw():
                seen += len(chunk)
                if seen >= DISCONNECT_AFTER_BYTES:
                    break  # closing an unread stream drops the connection: a disconnect
            return response.status_code, ""
        body = await response.aread()
        return response.status_code, body.decode(errors="replace") if response.is_error else ""
    finally:
        await response.aclose()


async def send(http: httpx.AsyncClient, shot: Shot, replica: int) -> Outcome:
    outcome = Outcome(shot, replica)
    for _ in range(BUSY_RETRIES + 1):
        try:
            outcome.status, text = await _once(http, shot)
        except httpx.HTTPError as exc:
            outcome.status, outcome.error = None, f"{type(exc).__name__}: {exc}"
            return outcome
        if not (shot.retry_busy and outcome.status == 429 and BUSY_MARK in text):
            return outcome
        outcome.busy_refusals += 1
        await asyncio.sleep(random.uniform(0.02, 0.15))  # jitter: not all retry at once
    return outcome


async def burst(
    urls: Sequence[str],
    shots: Sequence[Shot],
    *,
    concurrency: int = 64,
    deadline_s: float = 60.0,
) -> list[Outcome]:
    """Send every shot, shot i to ``urls[i % len(urls)]``, at most ``concurrency`` at once;
    everything ends within ``deadline_s`` (a TimeoutError says the gateway hung)."""
    clients = [client(url, concurrency) for url in urls]
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, shot: Shot) -> Outcome:
        async with gate:
            replica = index % len(clients)
            return await send(clients[replica], shot, replica)

    try:
        async with asyncio.timeout(deadline_s):
            return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(shots))))
    except TimeoutError:
        raise AssertionError(
            f"{len(shots)} requests did not end within {deadline_s:g} s."
        ) from None
    finally:
        for http in clients:
            await http.aclose()


class Steady:
    """Background load until ``stop``: ``workers`` loops, each sending its shots in turn to
    the replicas in turn, at most ``limit`` requests in all. Outcomes are kept."""

    def __init__(
        self, urls: Sequence[str], shots: Sequence[Shot], *, workers: int = 6, limit: int = 400
    ) -> None:
        self._urls = list(urls)
        self._shots = list(shots)
        self._workers = workers
        self._limit = limit
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[httpx.AsyncClient] = []
        self.outcomes: list[Outcome] = []

    def start(self) -> None:
        self._clients = [client(url, self._workers) for url in self._urls]
        self._tasks = [asyncio.create_task(self._loop(w)) for w in range(self._workers)]

    async def _loop(self, worker: int) -> None:
        index = worker
        while not self._stopping.is_set() and len(self.outcomes) < self._limit:
            shot = self._shots[index % len(self._shots)]
            replica = index % len(self._clients)
            self.outcomes.append(await send(self._clients[replica], shot, replica))
            index += self._workers

    async def stop(self, deadline_s: float = 30.0) -> list[Outcome]:
        """Let running requests finish (up to ``deadline_s``), then close the clients."""
        self._stopping.set()
        try:
            async with asyncio.timeout(deadline_s):
                await asyncio.gather(*self._tasks)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for http in self._clients:
                await http.aclose()
        return self.outcomes
