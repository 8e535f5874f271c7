"""What the mock's routes share: settings, counters and stored objects (``MockState``), an
answer being written (``Exchange``), the SSE response that reports how it ended, and
``Generation``, which gives every answer-writing route the same x-mock-* headers and counting.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.apis import ApiShape, ErrorKind
from gateway.mock.ledger import Ledger, Served
from gateway.mock.log import RequestLog

T = TypeVar("T")

_WORDS = ("The ", "mock ", "model ", "writes ", "one ", "word ", "per ", "token, ")


@dataclass(frozen=True, slots=True)
class MockConfig:
    latency_s: float = 0.0  # before the status line, streamed or not
    output_tokens: int = 200  # per answer, unless max_tokens is lower
    token_delay_s: float = 0.005  # between streamed deltas
    tokens_per_chunk: int = 1
    # An upstream that ignores the cap it is sent: every answer is output_tokens long.
    ignore_cap: bool = False


@dataclass(slots=True)
class MockStats:
    active: int = 0
    completed: int = 0
    cancelled: int = 0
    broken: int = 0

    def end(self, outcome: str) -> None:
        self.active -= 1
        setattr(self, outcome, getattr(self, outcome) + 1)

    def reset(self) -> None:
        # ``active`` is a gauge of requests still running, not a counter: it stays
        self.completed = self.cancelled = self.broken = 0


class Recent(Generic[T]):
    """The last ``limit`` objects stored, by id: a benchmark cannot grow it without end."""

    def __init__(self, limit: int = 1000) -> None:
        self._items: dict[str, T] = {}
        self._limit = limit

    def put(self, key: str, value: T) -> None:
        self._items.pop(key, None)
        self._items[key] = value
        if len(self._items) > self._limit:
            del self._items[next(iter(self._items))]

    def get(self, key: str) -> T | None:
        return self._items.get(key)

    def pop(self, key: str) -> T | None:
        return self._items.pop(key, None)

    def newest_first(self) -> list[T]:
        return list(reversed(self._items.values()))

    def clear(self) -> None:
        self._items.clear()


@dataclass(slots=True)
class StoredResponse:
    response: dict[str, Any]  # as ``GET /v1/responses/{id}`` answers it
    input: object  # the request's ``input``, for ``input_items``


@dataclass(slots=True)
class StoredBatch:
    id: str
    created_at: float
    requests: list[dict[str, Any]]
    cancelled_at: float | None = None


@dataclass(slots=True)
class MockState:
    """Everything one mock app holds, on ``app.state.mock``."""

    config: MockConfig
    stats: MockStats = field(default_factory=MockStats)
    log: RequestLog = field(default_factory=RequestLog)
    ledger: Ledger = field(default_factory=Ledger)
    responses: Recent[StoredResponse] = field(default_factory=Recent)
    batches: Recent[StoredBatch] = field(default_factory=Recent)

    def reset(self) -> None:
        self.stats.reset()
        self.log.clear()
        self.ledger.clear()
        self.responses.clear()
        self.batches.clear()


def state_of(request: Request) -> MockState:
    state: MockState = request.app.state.mock
    return state


class MockBreak(Exception):
    """Raised inside a streamed body so that the server cuts the connection."""


class _HeaderError(ValueError):
    pass


@dataclass(slots=True)
class Exchange:
    model: str
    input_tokens: int
    output_tokens: int  # per choice
    capped: bool
    include_usage: bool
    choices: int = 1
    break_after: int | None = None
    done: bool = False
    written: int = 0  # output tokens per choice generated so far (a stream's deltas)

    @property
    def served_output(self) -> int:
        """Output tokens generated, every choice: the whole answer once done."""
        return (self.output_tokens if self.done else self.written) * self.choices

    @property
    def text(self) -> str:
        """The whole answer of one choice, as the streamed pieces add up."""
        return "".join(pieces(self, 1))


def _text_bytes(value: object) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, Mapping):
        return sum(_text_bytes(item) for item in value.values())
    if isinstance(value, list):
        return sum(_text_bytes(item) for item in value)
    return 0


def start_exchange(
    config: MockConfig, body: Mapping[str, Any], prompt: object, cap: object
) -> Exchange:
    """An answer to ``prompt`` (every string in it counts, 4 bytes a token), at most ``cap``
    tokens long when that is a positive integer."""
    output = config.output_tokens
    if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 and not config.ignore_cap:
        output = min(output, cap)
    options = body.get("stream_options")
    return Exchange(
        model=str(body.get("model", "mock-model")),
        input_tokens=max(1, math.ceil(_text_bytes(prompt) / 4)),
        output_tokens=output,
        capped=output < config.output_tokens,
        include_usage=isinstance(options, Mapping) and options.get("include_usage") is True,
    )


def conversation_exchange(config: MockConfig, body: Mapping[str, Any]) -> Exchange:
    """An answer to a list of messages: Anthropic Messages (and each request of a batch),
    OpenAI Chat Completions."""
    prompt = [body.get("system"), body.get("messages"), body.get("tools")]
    return start_exchange(
        config, body, prompt, body.get("max_completion_tokens") or body.get("max_tokens")
    )


def pieces(exchange: Exchange, per_chunk: int) -> list[str]:
    words = [_WORDS[i % len(_WORDS)] for i in range(exchange.output_tokens)]
    step = max(1, per_chunk)
    return ["".join(words[i : i + step]) for i in range(0, len(words), step)]


async def pace(index: int, exchange: Exchange, config: MockConfig) -> None:
    """Waits before delta ``index``, or breaks the stream there; then counts it written."""
    if index == exchange.break_after:
        raise MockBreak(f"x-mock-break-after: {index}")
    if index:
        await asyncio.sleep(config.token_delay_s)
    step = max(1, config.tokens_per_chunk)
    exchange.written = min((index + 1) * step, exchange.output_tokens)


class Stream(StreamingResponse):
    """An SSE answer that reports how it ended, however it ended."""

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        exchange: Exchange,
        stats: MockStats,
        entry: Served,
    ) -> None:
        self._events = events
        self._exchange = exchange
        self._stats = stats
        self._entry = entry
        super().__init__(events, media_type="text/event-stream")
        self.headers["cache-control"] = "no-cache"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "cancelled"
        try:
            await super().__call__(scope, receive, send)
            if self._exchange.done:
                outcome = "completed"
        except MockBreak:
            outcome = "broken"
            raise
        finally:
            # a disconnect may leave the generator suspended at a yield: close it now, not at GC
            await self._events.aclose()
            self._stats.end(outcome)
            self._entry.output_tokens = self._exchange.served_output
            self._entry.end(outcome, self.status_code)


def error(
    wire: ApiShape, status: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    extra = {"retry-after": "1"} if status in (429, 503, 529) else {}
    body = wire.error_body(status, ErrorKind.from_status(status), message)
    return Response(body, status, {**extra, **(headers or {})}, media_type="application/json")


async def read_json(request: Request) -> object:
    """The body as JSON; ValueError when it is not."""
    return json.loads(await request.body())


async def _client_stays(request: Request, seconds: float) -> bool:
    """Sleeps ``seconds``, or returns False as soon as the client disconnects."""
    if seconds <= 0:
        return True

    async def disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnect())
    try:
        done, _ = await asyncio.wait({watcher}, timeout=seconds)
        return not done
    finally:
        watcher.cancel()


def _header(request: Request, name: str, kind: type[int] | type[float]) -> int | float | None:
    value = request.headers.get(name)
    if value is None:
        return None
    try:
        number = kind(value)
    except ValueError:
        number = -1
    if number < 0:
        raise _HeaderError(f"{name} must be a non-negative number; got {value!r}.")
    return number


@dataclass(slots=True)
class Call:
    """One accepted request to a generating route, past its latency and injected status."""

    request: Request
    state: MockState
    body: dict[str, Any]
    break_after: int | None
    entry: Served
    exchange: Exchange | None = None
    writes_output: bool = True

    @property
    def config(self) -> MockConfig:
        return self.state.config

    def track(self, exchange: Exchange, *, writes_output: bool = True) -> Exchange:
        """``exchange`` is this request's answer: the ledger charges its input, and its
        output unless ``writes_output`` is false (embeddings)."""
        self.exchange = exchange
        self.writes_output = writes_output
        self.entry.input_tokens = exchange.input_tokens
        return exchange

    def served_output(self) -> int:
        if self.exchange is None or not self.writes_output:
            return 0
        return self.exchange.output_tokens * self.exchange.choices

    def stream(self, exchange: Exchange, events: AsyncGenerator[bytes, None]) -> Stream:
        """``events`` (which read ``exchange``) as the answer; they may be cut by
        x-mock-break-after, and they count the request in MockStats and the ledger when
        they end."""
        self.track(exchange)
        self.entry.stream = True
        exchange.break_after = self.break_after
        return Stream(events, exchange, self.state.stats, self.entry)


@dataclass(frozen=True, slots=True)
class Generation:
    """A route that writes an answer: counted in MockStats, x-mock-* headers obeyed.

    ``accepts`` says whether the JSON object has the fields ``answer`` needs; ``refusal``
    is the 400 message when it does not.
    """

    wire: ApiShape
    accepts: Callable[[dict[str, Any]], bool]
    refusal: str
    answer: Callable[[Call], Response]

    async def endpoint(self, request: Request) -> Response:
        state = state_of(request)
        state.stats.active += 1
        entry = state.ledger.open(request)
        outcome: str | None = "cancelled"  # None once a stream has taken over the counting
        response: Response | None = None
        try:
            response = await self._respond(request, state, entry)
            outcome = None if isinstance(response, Stream) else "completed"
            if response.status_code == 499:
                outcome = "cancelled"
            return response
        finally:
            if outcome is not None:
                state.stats.end(outcome)
                status = None if response is None else response.status_code
                failed = status is not None and status >= 400 and status != 499
                entry.end("failed" if failed else outcome, status)

    async def _respond(self, request: Request, state: MockState, entry: Served) -> Response:
        try:
            body = await read_json(request)
            status = _header(request, "x-mock-status", int)
            break_after = _header(request, "x-mock-break-after", int)
            latency = _header(request, "x-mock-latency", float)
        except (ValueError, _HeaderError) as exc:
            message = str(exc) if isinstance(exc, _HeaderError) else "The body is not JSON."
            return error(self.wire, 400, message)
        if not isinstance(body, dict) or not self.accepts(body):
            return error(self.wire, 400, self.refusal)
        entry.stream = body.get("stream") is True
        wait = state.config.latency_s if latency is None else latency
        if not await _client_stays(request, wait):
            return Response(status_code=499)  # nobody is left to read it
        if status is not None:
            message = f"Mock error {status}, asked for by x-mock-status."
            return error(self.wire, int(status), message)
        cut = None if break_after is None else int(break_after)
        call = Call(request, state, body, cut, entry)
        response = self.answer(call)
        if not isinstance(response, Stream):
            entry.output_tokens = call.served_output()
        return response
