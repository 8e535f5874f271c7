"""The Anthropic routes: Messages, its token count and batches, and legacy Text Completions."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.apis import ANTHROPIC
from gateway.apis.sse import sse_event as sse
from gateway.mock.base import (
    Call,
    Exchange,
    Generation,
    MockConfig,
    StoredBatch,
    conversation_exchange,
    error,
    pace,
    pieces,
    read_json,
    start_exchange,
    state_of,
)

_DAY_S = 86_400
_HUMAN_TURN = "\n\nHuman:"  # the stop sequence a legacy completion ends on


def _usage(exchange: Exchange, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": exchange.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _message(exchange: Exchange, text: str) -> dict[str, Any]:
    """An Anthropic message; ``text`` is empty for the skeleton in ``message_start``."""
    return {
        "id": f"msg_mock{uuid.uuid4().hex[:20]}",
        "type": "message",
        "role": "assistant",
        "model": exchange.model,
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": ("max_tokens" if exchange.capped else "end_turn") if text else None,
        "stop_sequence": None,
        "usage": _usage(exchange, exchange.output_tokens if text else 1),
    }


async def _message_events(exchange: Exchange, config: MockConfig) -> AsyncGenerator[bytes, None]:
    message = _message(exchange, "")
    yield sse("message_start", {"type": "message_start", "message": message})
    block = {"type": "text", "text": ""}
    yield sse(
        "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    )
    yield sse("ping", {"type": "ping"})
    for index, text in enumerate(pieces(exchange, config.tokens_per_chunk)):
        await pace(index, exchange, config)
        delta = {"type": "text_delta", "text": text}
        yield sse(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
    yield sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    stop = {"stop_reason": "max_tokens" if exchange.capped else "end_turn", "stop_sequence": None}
    usage = {"output_tokens": exchange.output_tokens}
    yield sse("message_delta", {"type": "message_delta", "delta": stop, "usage": usage})
    yield sse("message_stop", {"type": "message_stop"})
    exchange.done = True


def _messages(call: Call) -> Response:
    exchange = call.track(conversation_exchange(call.config, call.body))
    if call.body.get("stream") is True:
        return call.stream(exchange, _message_events(exchange, call.config))
    return JSONResponse(_message(exchange, exchange.text))


def _completion(ident: str, exchange: Exchange, text: str, final: bool) -> dict[str, Any]:
    """A legacy completion, or one streamed piece of it (the last one ``final``)."""
    stop_reason = None
    if final:
        stop_reason = "max_tokens" if exchange.capped else "stop_sequence"
    return {
        "type": "completion",
        "id": ident,
        "completion": text,
        "stop_reason": stop_reason,
        "stop": _HUMAN_TURN if stop_reason == "stop_sequence" else None,
        "model": exchange.model,
    }


async def _completion_events(
    ident: str, exchange: Exchange, config: MockConfig
) -> AsyncGenerator[bytes, None]:
    yield sse("ping", {"type": "ping"})
    for index, text in enumerate(pieces(exchange, config.tokens_per_chunk)):
        await pace(index, exchange, config)
        yield sse("completion", _completion(ident, exchange, text, final=False))
    yield sse("completion", _completion(ident, exchange, "", final=True))
    exchange.done = True


def _complete(call: Call) -> Response:
    body = call.body
    exchange = call.track(
        start_exchange(call.config, body, body.get("prompt"), body.get("max_tokens_to_sample"))
    )
    ident = f"compl_mock{uuid.uuid4().hex[:20]}"
    if body.get("stream") is True:
        return call.stream(exchange, _completion_events(ident, exchange, call.config))
    return JSONResponse(_completion(ident, exchange, exchange.text, final=True))


def _is_batch(body: dict[str, Any]) -> bool:
    requests = body.get("requests")
    return (
        isinstance(requests, list)
        and bool(requests)
        and all(
            isinstance(item, dict)
            and isinstance(item.get("custom_id"), str)
            and isinstance(item.get("params"), dict)
            for item in requests
        )
    )


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _batch(request: Request, batch: StoredBatch, ended: bool) -> dict[str, Any]:
    """The batch as the API shows it. The mock ends a batch at once: the answer to the
    create says ``in_progress``, every later look ``ended``."""
    counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
    if not ended:
        counts["processing"] = len(batch.requests)
        status = "in_progress" if batch.cancelled_at is None else "canceling"
    else:
        counts["succeeded" if batch.cancelled_at is None else "canceled"] = len(batch.requests)
        status = "ended"
    results = f"{str(request.base_url).rstrip('/')}/v1/messages/batches/{batch.id}/results"
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": counts,
        "ended_at": _iso(batch.created_at if ended else None),
        "created_at": _iso(batch.created_at),
        "expires_at": _iso(batch.created_at + _DAY_S),
        "archived_at": None,
        "cancel_initiated_at": _iso(batch.cancelled_at),
        "results_url": results if ended else None,
    }


def _create_batch(call: Call) -> Response:
    batch = StoredBatch(f"msgbatch_mock{uuid.uuid4().hex[:20]}", time.time(), call.body["requests"])
    call.state.batches.put(batch.id, batch)
    return JSONResponse(_batch(call.request, batch, ended=False))


def _stored_batch(request: Request) -> StoredBatch:
    """The batch named in the path; an id the mock never made looks like a one-request batch."""
    ident = request.path_params["id"]
    stored = state_of(request).batches.get(ident)
    if stored is not None:
        return stored
    params = {"model": "mock-model", "max_tokens": 1024, "messages": []}
    return StoredBatch(ident, time.time(), [{"custom_id": "request-1", "params": params}])


async def _list_batches(request: Request) -> Response:
    limit = request.query_params.get("limit", "20")
    count = int(limit) if limit.isdigit() and 0 < int(limit) <= 1000 else 20
    batches = state_of(request).batches.newest_first()
    page = [_batch(request, batch, ended=True) for batch in batches[:count]]
    return JSONResponse(
        {
            "data": page,
            "has_more": len(batches) > count,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }
    )


async def _get_batch(request: Request) -> Response:
    return JSONResponse(_batch(request, _stored_batch(request), ended=True))


async def _delete_batch(request: Request) -> Response:
    ident = request.path_params["id"]
    state_of(request).batches.pop(ident)
    return JSONResponse({"id": ident, "type": "message_batch_deleted"})


async def _cancel_batch(request: Request) -> Response:
    batch = _stored_batch(request)
    if batch.cancelled_at is None:
        batch.cancelled_at = time.time()
    return JSONResponse(_batch(request, batch, ended=False))


async def _batch_results(request: Request) -> Response:
    """JSONL, one line per request: a message with usage, or ``canceled``."""
    batch = _stored_batch(request)
    config = state_of(request).config
    lines = []
    for item in batch.requests:
        result: dict[str, Any] = {"type": "canceled"}
        if batch.cancelled_at is None:
            exchange = conversation_exchange(config, item["params"])
            result = {"type": "succeeded", "message": _message(exchange, exchange.text)}
        lines.append(json.dumps({"custom_id": item["custom_id"], "result": result}) + "\n")
    return Response("".join(lines), media_type="application/x-jsonl")


async def _count_tokens(request: Request) -> Response:
    """Counts as a message's usage does, so the two agree."""
    try:
        body = await read_json(request)
    except ValueError:
        return error(ANTHROPIC, 400, "The body is not JSON.")
    if not isinstance(body, dict) or not _has_messages(body):
        return error(ANTHROPIC, 400, _MESSAGES_REFUSAL)
    return JSONResponse(
        {"input_tokens": conversation_exchange(state_of(request).config, body).input_tokens}
    )


def _has_messages(body: dict[str, Any]) -> bool:
    return isinstance(body.get("messages"), list)


_MESSAGES_REFUSAL = "The body must be an object with a 'messages' list."

MESSAGES = Generation(ANTHROPIC, _has_messages, _MESSAGES_REFUSAL, _messages)
COMPLETE = Generation(
    ANTHROPIC,
    lambda body: isinstance(body.get("prompt"), str),
    "The body must be an object with a 'prompt' string.",
    _complete,
)
CREATE_BATCH = Generation(
    ANTHROPIC,
    _is_batch,
    "The body must be an object with a non-empty 'requests' list of objects, "
    "each with a 'custom_id' string and a 'params' object.",
    _create_batch,
)

ROUTES = [
    Route("/v1/messages", MESSAGES.endpoint, methods=["POST"]),
    Route("/v1/messages/count_tokens", _count_tokens, methods=["POST"]),
    Route("/v1/messages/batches", CREATE_BATCH.endpoint, methods=["POST"]),
    Route("/v1/messages/batches", _list_batches, methods=["GET"]),
    Route("/v1/messages/batches/{id}", _get_batch, methods=["GET"]),
    Route("/v1/messages/batches/{id}", _delete_batch, methods=["DELETE"]),
    Route("/v1/messages/batches/{id}/results", _batch_results, methods=["GET"]),
    Route("/v1/messages/batches/{id}/cancel", _cancel_batch, methods=["POST"]),
    Route("/v1/complete", COMPLETE.endpoint, methods=["POST"]),
]
