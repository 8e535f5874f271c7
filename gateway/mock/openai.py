"""The OpenAI routes: Chat Completions, Responses, legacy Completions, Embeddings, Models."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.apis import OPENAI
from gateway.apis.sse import sse_event as sse
from gateway.mock.base import (
    Call,
    Exchange,
    Generation,
    MockConfig,
    StoredResponse,
    conversation_exchange,
    pace,
    pieces,
    start_exchange,
    state_of,
)

MODELS = ("mock-model", "claude-mock", "gpt-mock")
_CREATED = 1_700_000_000  # when the mock's models "came out"


def _mock_id(prefix: str) -> str:
    return f"{prefix}mock{uuid.uuid4().hex[:20]}"


def _chat_usage(exchange: Exchange) -> dict[str, Any]:
    return {
        "prompt_tokens": exchange.input_tokens,
        "completion_tokens": exchange.output_tokens,
        "total_tokens": exchange.input_tokens + exchange.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _chat_completion(exchange: Exchange, text: str) -> dict[str, Any]:
    return {
        "id": _mock_id("chatcmpl-"),
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
        "usage": _chat_usage(exchange),
        "system_fingerprint": "fp_mock",
    }


async def _chat_events(exchange: Exchange, config: MockConfig) -> AsyncGenerator[bytes, None]:
    head = {
        "id": _mock_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": exchange.model,
        "system_fingerprint": "fp_mock",
    }
    tail = {"usage": None} if exchange.include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse(None, {**head, "choices": [choice], **tail})

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for index, text in enumerate(pieces(exchange, config.tokens_per_chunk)):
        await pace(index, exchange, config)
        yield chunk({"content": text})
    yield chunk({}, "length" if exchange.capped else "stop")
    if exchange.include_usage:
        yield sse(None, {**head, "choices": [], "usage": _chat_usage(exchange)})
    yield sse(None, "[DONE]")
    exchange.done = True


def _chat(call: Call) -> Response:
    exchange = call.track(conversation_exchange(call.config, call.body))
    if call.body.get("stream") is True:
        return call.stream(exchange, _chat_events(exchange, call.config))
    return JSONResponse(_chat_completion(exchange, exchange.text))


def _response(ident: str, exchange: Exchange, body: dict[str, Any]) -> dict[str, Any]:
    """A finished Responses API answer, as ``response.completed`` and a GET show it."""
    usage = {
        "input_tokens": exchange.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": exchange.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": exchange.input_tokens + exchange.output_tokens,
    }
    text = {"type": "output_text", "text": exchange.text, "annotations": []}
    message = {
        "id": _mock_id("msg_"),
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [text],
    }
    return {
        "id": ident,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "background": body.get("background") is True,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": exchange.model,
        "output": [message],
        "previous_response_id": body.get("previous_response_id"),
        "usage": usage,
    }


def _unfinished(response: dict[str, Any], status: str) -> dict[str, Any]:
    return {**response, "status": status, "output": [], "usage": None}


async def _response_events(
    final: dict[str, Any], exchange: Exchange, config: MockConfig
) -> AsyncGenerator[bytes, None]:
    numbers = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        return sse(kind, {"type": kind, "sequence_number": next(numbers), **fields})

    started = _unfinished(final, "in_progress")
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    item = final["output"][0]
    part = item["content"][0]
    at = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    yield event(
        "response.output_item.added",
        output_index=0,
        item={**item, "status": "in_progress", "content": []},
    )
    yield event("response.content_part.added", **at, part={**part, "text": ""})
    for index, text in enumerate(pieces(exchange, config.tokens_per_chunk)):
        await pace(index, exchange, config)
        yield event("response.output_text.delta", **at, delta=text)
    yield event("response.output_text.done", **at, text=part["text"])
    yield event("response.content_part.done", **at, part=part)
    yield event("response.output_item.done", output_index=0, item=item)
    yield event("response.completed", response=final)
    exchange.done = True


def _create_response(call: Call) -> Response:
    body = call.body
    prompt = [body.get("instructions"), body.get("input"), body.get("tools")]
    exchange = call.track(start_exchange(call.config, body, prompt, body.get("max_output_tokens")))
    final = _response(_mock_id("resp_"), exchange, body)
    call.state.responses.put(final["id"], StoredResponse(final, body.get("input")))
    if body.get("stream") is True:
        return call.stream(exchange, _response_events(final, exchange, call.config))
    if body.get("background") is True:
        return JSONResponse(_unfinished(final, "queued"))
    return JSONResponse(final)


def _stored_response(request: Request) -> StoredResponse:
    """The response named in the path; an id the mock never made looks like a finished one."""
    ident = request.path_params["id"]
    stored = state_of(request).responses.get(ident)
    if stored is not None:
        return stored
    exchange = start_exchange(state_of(request).config, {}, None, None)
    return StoredResponse(_response(ident, exchange, {}), None)


async def _get_response(request: Request) -> Response:
    return JSONResponse(_stored_response(request).response)


async def _delete_response(request: Request) -> Response:
    ident = request.path_params["id"]
    state_of(request).responses.pop(ident)
    return JSONResponse({"id": ident, "object": "response", "deleted": True})


async def _cancel_response(request: Request) -> Response:
    return JSONResponse({**_stored_response(request).response, "status": "cancelled"})


async def _input_items(request: Request) -> Response:
    given = _stored_response(request).input
    if isinstance(given, str):
        content = [{"type": "input_text", "text": given}]
        given = [{"type": "message", "role": "user", "content": content}]
    listed = given if isinstance(given, list) else []
    items = [{"id": _mock_id("msg_"), **item} for item in listed if isinstance(item, dict)]
    return JSONResponse(
        {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": False,
        }
    )


def _inputs(value: object) -> list[object]:
    """The separate inputs in a ``prompt`` or ``input``: a string, a list of token ids, or a
    list of either."""
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        return list(value)
    return [value]


def _text_completion(exchange: Exchange) -> dict[str, Any]:
    finish = "length" if exchange.capped else "stop"
    text = exchange.text
    completion_tokens = exchange.output_tokens * exchange.choices
    return {
        "id": _mock_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": exchange.model,
        "choices": [
            {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
            for index in range(exchange.choices)
        ],
        "usage": {
            "prompt_tokens": exchange.input_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": exchange.input_tokens + completion_tokens,
        },
    }


async def _completion_events(exchange: Exchange, config: MockConfig) -> AsyncGenerator[bytes, None]:
    whole = _text_completion(exchange)
    head = {key: whole[key] for key in ("id", "object", "created", "model")}
    tail = {"usage": None} if exchange.include_usage else {}

    def chunk(index: int, text: str, finish: str | None = None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return sse(None, {**head, "choices": [choice], **tail})

    for step, text in enumerate(pieces(exchange, config.tokens_per_chunk)):
        await pace(step, exchange, config)
        for index in range(exchange.choices):
            yield chunk(index, text)
    for choice in whole["choices"]:
        yield chunk(choice["index"], "", choice["finish_reason"])
    if exchange.include_usage:
        yield sse(None, {**head, "choices": [], "usage": whole["usage"]})
    yield sse(None, "[DONE]")
    exchange.done = True


def _complete(call: Call) -> Response:
    body = call.body
    prompt = body.get("prompt")
    # 16 is the API's own default cap for legacy completions
    exchange = call.track(start_exchange(call.config, body, prompt, body.get("max_tokens") or 16))
    n = body.get("n")
    per_prompt = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    exchange.choices = len(_inputs(prompt)) * per_prompt
    if body.get("stream") is True:
        return call.stream(exchange, _completion_events(exchange, call.config))
    return JSONResponse(_text_completion(exchange))


def _embedding(value: object) -> list[float]:
    """Eight numbers of unit length, the same for the same input."""
    digest = hashlib.sha256(json.dumps(value).encode()).digest()
    raw = [byte / 127.5 - 1 for byte in digest[:8]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def _embed(call: Call) -> Response:
    given = call.body.get("input")
    exchange = call.track(start_exchange(call.config, call.body, given, None), writes_output=False)
    data = [
        {"object": "embedding", "index": index, "embedding": _embedding(value)}
        for index, value in enumerate(_inputs(given))
    ]
    usage = {"prompt_tokens": exchange.input_tokens, "total_tokens": exchange.input_tokens}
    return JSONResponse({"object": "list", "data": data, "model": exchange.model, "usage": usage})


def _model(ident: str) -> dict[str, Any]:
    return {"id": ident, "object": "model", "created": _CREATED, "owned_by": "mock"}


async def _list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [_model(ident) for ident in MODELS]})


async def _get_model(request: Request) -> Response:
    return JSONResponse(_model(request.path_params["id"]))


def _has(key: str, *kinds: type) -> Callable[[dict[str, Any]], bool]:
    return lambda body: isinstance(body.get(key), kinds)


CHAT = Generation(
    OPENAI,
    _has("messages", list),
    "The body must be an object with a 'messages' list.",
    _chat,
)
RESPONSES = Generation(
    OPENAI,
    _has("input", str, list),
    "The body must be an object with an 'input' string or list.",
    _create_response,
)
COMPLETIONS = Generation(
    OPENAI,
    _has("prompt", str, list),
    "The body must be an object with a 'prompt' string or list.",
    _complete,
)
EMBEDDINGS = Generation(
    OPENAI,
    _has("input", str, list),
    "The body must be an object with an 'input' string or list.",
    _embed,
)

ROUTES = [
    Route("/v1/chat/completions", CHAT.endpoint, methods=["POST"]),
    Route("/v1/responses", RESPONSES.endpoint, methods=["POST"]),
    Route("/v1/responses/{id}", _get_response, methods=["GET"]),
    Route("/v1/responses/{id}", _delete_response, methods=["DELETE"]),
    Route("/v1/responses/{id}/cancel", _cancel_response, methods=["POST"]),
    Route("/v1/responses/{id}/input_items", _input_items, methods=["GET"]),
    Route("/v1/completions", COMPLETIONS.endpoint, methods=["POST"]),
    Route("/v1/embeddings", EMBEDDINGS.endpoint, methods=["POST"]),
    Route("/v1/models", _list_models, methods=["GET"]),
    Route("/v1/models/{id}", _get_model, methods=["GET"]),
]
