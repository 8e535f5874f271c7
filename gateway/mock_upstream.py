"""A fake Anthropic and OpenAI API for demos, tests and benchmarks.

``POST /v1/messages`` and ``POST /v1/chat/completions`` answer in the real shapes,
streamed or not. Request headers inject failures:

    x-mock-status: 503       answer with that status, in the API's error shape
    x-mock-break-after: 3    cut the connection after 3 streamed deltas
    x-mock-latency: 2.5      seconds before the answer starts (overrides the config)

``GET /mock/stats`` counts requests ``active`` now and, since the last
``POST /mock/reset``, ``completed``, ``cancelled`` (the client left first) and
``broken`` (cut by x-mock-break-after): how tests see whether the gateway
cancelled its upstream request.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncGenerator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.apis import ANTHROPIC, OPENAI, ErrorKind, WireFormat, error_format_for

_WORDS = ("The ", "mock ", "model ", "writes ", "one ", "word ", "per ", "token, ")


@dataclass(frozen=True, slots=True)
class MockConfig:
    latency_s: float = 0.0  # before the status line, streamed or not
    output_tokens: int = 200  # per answer, unless max_tokens is lower
    token_delay_s: float = 0.005  # between streamed deltas
    tokens_per_chunk: int = 1


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


class MockBreak(Exception):
    """Raised inside a streamed body so that the server cuts the connection."""


class _HeaderError(ValueError):
    pass


@dataclass(slots=True)
class _Exchange:
    api: str
    model: str
    input_tokens: int
    output_tokens: int
    capped: bool
    include_usage: bool
    break_after: int | None
    done: bool = False


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


def _text_bytes(value: object) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, Mapping):
        return sum(_text_bytes(item) for item in value.values())
    if isinstance(value, list):
        return sum(_text_bytes(item) for item in value)
    return 0


def _exchange(body: dict[str, Any], api: str, config: MockConfig) -> _Exchange:
    prompt = _text_bytes([body.get("system"), body.get("messages"), body.get("tools")])
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    output = config.output_tokens
    if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
        output = min(output, cap)
    options = body.get("stream_options")
    return _Exchange(
        api=api,
        model=str(body.get("model", "mock-model")),
        input_tokens=max(1, math.ceil(prompt / 4)),
        output_tokens=output,
        capped=output < config.output_tokens,
        include_usage=isinstance(options, Mapping) and options.get("include_usage") is True,
        break_after=None,
    )


def _pieces(exchange: _Exchange, per_chunk: int) -> list[str]:
    words = [_WORDS[i % len(_WORDS)] for i in range(exchange.output_tokens)]
    step = max(1, per_chunk)
    return ["".join(words[i : i + step]) for i in range(0, len(words), step)]


def _anthropic_usage(exchange: _Exchange, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": exchange.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _openai_usage(exchange: _Exchange) -> dict[str, Any]:
    return {
        "prompt_tokens": exchange.input_tokens,
        "completion_tokens": exchange.output_tokens,
        "total_tokens": exchange.input_tokens + exchange.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _message(exchange: _Exchange, text: str) -> dict[str, Any]:
    """An Anthropic message; ``text`` is empty for the skeleton in ``message_start``."""
    return {
        "id": f"msg_mock{uuid.uuid4().hex[:20]}",
        "type": "message",
        "role": "assistant",
        "model": exchange.model,
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": ("max_tokens" if exchange.capped else "end_turn") if text else None,
        "stop_sequence": None,
        "usage": _anthropic_usage(exchange, exchange.output_tokens if text else 1),
    }


def _completion(exchange: _Exchange, text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-mock{uuid.uuid4().hex[:20]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": exchange.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if exchange.capped else "stop",
            }
        ],
        "usage": _openai_usage(exchange),
        "system_fingerprint": "fp_mock",
    }


def _sse(event: str | None, data: Mapping[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


async def _pace(index: int, exchange: _Exchange, config: MockConfig) -> None:
    """Waits before delta ``index``, or breaks the stream there."""
    if index == exchange.break_after:
        raise MockBreak(f"x-mock-break-after: {index}")
    if index:
        await asyncio.sleep(config.token_delay_s)


async def _anthropic_stream(exchange: _Exchange, config: MockConfig) -> AsyncGenerator[bytes, None]:
    message = _message(exchange, "")
    yield _sse("message_start", {"type": "message_start", "message": message})
    block = {"type": "text", "text": ""}
    yield _sse(
        "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    )
    yield _sse("ping", {"type": "ping"})
    for index, text in enumerate(_pieces(exchange, config.tokens_per_chunk)):
        await _pace(index, exchange, config)
        delta = {"type": "text_delta", "text": text}
        yield _sse(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    stop = {"stop_reason": "max_tokens" if exchange.capped else "end_turn", "stop_sequence": None}
    usage = {"output_tokens": exchange.output_tokens}
    yield _sse("message_delta", {"type": "message_delta", "delta": stop, "usage": usage})
    yield _sse("message_stop", {"type": "message_stop"})
    exchange.done = True


async def _openai_stream(exchange: _Exchange, config: MockConfig) -> AsyncGenerator[bytes, None]:
    head = {
        "id": f"chatcmpl-mock{uuid.uuid4().hex[:20]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": exchange.model,
        "system_fingerprint": "fp_mock",
    }
    tail = {"usage": None} if exchange.include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse(None, {**head, "choices": [choice], **tail})

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for index, text in enumerate(_pieces(exchange, config.tokens_per_chunk)):
        await _pace(index, exchange, config)
        yield chunk({"content": text})
    yield chunk({}, "length" if exchange.capped else "stop")
    if exchange.include_usage:
        yield _sse(None, {**head, "choices": [], "usage": _openai_usage(exchange)})
    yield _sse(None, "[DONE]")
    exchange.done = True


class _Stream(StreamingResponse):
    """An SSE answer that reports how it ended, however it ended."""

    def __init__(self, exchange: _Exchange, config: MockConfig, stats: MockStats) -> None:
        make = _anthropic_stream if exchange.api == "anthropic" else _openai_stream
        self._events = make(exchange, config)
        self._exchange = exchange
        self._stats = stats
        super().__init__(self._events, media_type="text/event-stream")
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


def _error(wire: WireFormat, status: int, message: str) -> Response:
    headers = {"retry-after": "1"} if status in (429, 503, 529) else None
    body = wire.error_body(status, ErrorKind.from_status(status), message)
    return Response(body, status, headers, media_type="application/json")


async def _model_route(request: Request) -> Response:
    wire: WireFormat = ANTHROPIC if request.url.path == "/v1/messages" else OPENAI
    config: MockConfig = request.app.state.config
    stats: MockStats = request.app.state.stats
    stats.active += 1
    outcome: str | None = "cancelled"  # None once a stream has taken over the counting
    try:
        try:
            body = json.loads(await request.body())
            status = _header(request, "x-mock-status", int)
            break_after = _header(request, "x-mock-break-after", int)
            latency = _header(request, "x-mock-latency", float)
        except (ValueError, _HeaderError) as exc:
            outcome = "completed"
            message = str(exc) if isinstance(exc, _HeaderError) else "The body is not JSON."
            return _error(wire, 400, message)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            outcome = "completed"
            return _error(wire, 400, "The body must be an object with a 'messages' list.")
        if not await _client_stays(request, config.latency_s if latency is None else latency):
            return Response(status_code=499)  # nobody is left to read it
        outcome = "completed"
        if status is not None:
            return _error(wire, int(status), f"Mock error {status}, asked for by x-mock-status.")
        exchange = _exchange(body, wire.name, config)
        if body.get("stream") is True:
            exchange.break_after = None if break_after is None else int(break_after)
            outcome = None
            return _Stream(exchange, config, stats)
        text = "".join(_pieces(exchange, 1))
        answer = _message(exchange, text) if wire is ANTHROPIC else _completion(exchange, text)
        return JSONResponse(answer)
    finally:
        if outcome is not None:
            stats.end(outcome)


async def _stats(request: Request) -> Response:
    return JSONResponse(asdict(request.app.state.stats))


async def _reset(request: Request) -> Response:
    request.app.state.stats.reset()
    return await _stats(request)


async def _not_found(request: Request, exc: Exception) -> Response:
    wire = error_format_for(request.url.path)
    return _error(wire, 404, f"No route {request.method} {request.url.path} in the mock API.")


def create_mock_app(config: MockConfig) -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/messages", _model_route, methods=["POST"]),
            Route("/v1/chat/completions", _model_route, methods=["POST"]),
            Route("/mock/stats", _stats, methods=["GET"]),
            Route("/mock/reset", _reset, methods=["POST"]),
        ],
        exception_handlers={404: _not_found},
    )
    app.state.config = config
    app.state.stats = MockStats()
    return app


async def serve_mock(host: str, port: int, config: MockConfig) -> None:
    """Runs the mock API until the process is told to stop."""
    app = create_mock_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    await server.serve()
