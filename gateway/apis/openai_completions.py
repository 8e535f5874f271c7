"""The OpenAI legacy Completions API (``POST /v1/completions``).

The reservation is the cap times every completion the API bills: ``max(n, best_of)`` per
prompt (``best_of`` candidates are all generated and billed, though only ``n`` come back),
times the number of prompts when ``prompt`` lists several. A prompt is raw text or token
ids, with no message framing, so it counts ``ceil(bytes / 3)`` plus one token per id and
no overhead; ``suffix`` is added to every prompt.

This module also holds what the embeddings route shares with it: the prompt's shapes
(``token_input``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.apis.base import (
    json_kind,
    optional_bool,
    optional_positive_int,
    parse_json_object,
    require_model,
    rewritten,
    tokens_for_bytes,
)
from gateway.apis.openai import OpenAIStreamMeter, ask_for_usage, usage_moving_cached
from gateway.errors import MalformedBody
from gateway.metering import RequestEstimate, Usage


@dataclass(frozen=True, slots=True)
class TokenInput:
    """A ``prompt`` (or embeddings ``input``) in any of its shapes, measured."""

    count: int  # how many prompts (or inputs) it holds
    text_bytes: int
    token_ids: int  # each id is exactly one token

    @property
    def tokens(self) -> int:
        return tokens_for_bytes(self.text_bytes) + self.token_ids


_SHAPES = "a string, a list of strings, a list of token ids or a list of token-id lists"


def token_input(body: Mapping[str, Any], key: str) -> TokenInput:
    """``body[key]`` as text or token ids; MalformedBody naming the first wrong item."""
    value = body.get(key)
    if isinstance(value, str):
        return TokenInput(1, len(value.encode()), 0)
    if not isinstance(value, list):
        raise MalformedBody(f"'{key}' must be {_SHAPES}; got {json_kind(value)}.")
    first = value[0] if value else ""
    if isinstance(first, str):
        _check_items(key, value, lambda item: isinstance(item, str), "a string")
        return TokenInput(len(value), sum(len(text.encode()) for text in value), 0)
    if _is_token_id(first):
        _check_items(key, value, _is_token_id, "a token id (a non-negative integer)")
        return TokenInput(1, 0, len(value))
    if isinstance(first, list):
        _check_items(key, value, lambda item: isinstance(item, list), "a list of token ids")
        for index, ids in enumerate(value):
            what = "a token id (a non-negative integer)"
            _check_items(f"{key}[{index}]", ids, _is_token_id, what)
        return TokenInput(len(value), 0, sum(len(ids) for ids in value))
    raise MalformedBody(
        f"'{key}[0]' must be a string, a token id or a list of token ids; got {json_kind(first)}."
    )


def _is_token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_items(
    key: str, items: Sequence[object], ok: Callable[[object], bool], what: str
) -> None:
    for index, item in enumerate(items):
        if not ok(item):
            raise MalformedBody(f"'{key}[{index}]' must be {what}; got {json_kind(item)}.")


def _optional_count(body: Mapping[str, Any], key: str) -> int | None:
    """A non-negative integer or None: ``max_tokens: 0`` with ``echo`` scores a prompt."""
    value = body.get(key)
    if value is None:
        return None
    if not _is_token_id(value):
        raise MalformedBody(f"'{key}' must be a non-negative integer; got {json_kind(value)}.")
    count: int = value
    return count


class CompletionsStreamMeter(OpenAIStreamMeter):
    """Chat's stream meter, reading ``choices[].text`` where chat has deltas."""

    def count_choice(self, choice: Mapping[str, Any]) -> None:
        if isinstance(text := choice.get("text"), str):
            self.wrote(len(text.encode()))

    def closing_choice(self, index: object) -> dict[str, Any]:
        return {"index": index, "text": "", "logprobs": None, "finish_reason": "length"}


class CompletionsFormat:
    name = "openai"
    meter = "openai-completions"

    def estimate(self, body: Mapping[str, Any], default_cap: int) -> RequestEstimate:
        model = require_model(body)
        prompt = token_input(body, "prompt")
        suffix = body.get("suffix")
        if suffix is not None and not isinstance(suffix, str):
            raise MalformedBody(f"'suffix' must be a string; got {json_kind(suffix)}.")
        cap = _optional_count(body, "max_tokens")
        n = optional_positive_int(body, "n") or 1
        best_of = optional_positive_int(body, "best_of") or 1
        stream = optional_bool(body, "stream")
        prompts = max(1, prompt.count)
        suffix_bytes = len(suffix.encode()) if suffix else 0
        input_tokens = tokens_for_bytes(prompt.text_bytes + suffix_bytes * prompts)
        return RequestEstimate(
            model=model,
            input_tokens=input_tokens + prompt.token_ids,
            max_output_tokens=(default_cap if cap is None else cap) * max(n, best_of) * prompts,
            stream=stream,
            shapeable=True,
        )

    def with_cap(self, body: Mapping[str, Any], cap: int) -> dict[str, Any]:
        n = optional_positive_int(body, "n") or 1
        best_of = optional_positive_int(body, "best_of") or 1
        prompts = max(1, token_input(body, "prompt").count)
        return {**body, "max_tokens": max(1, cap // (max(n, best_of) * prompts))}

    def prepare(self, body: Mapping[str, Any], raw: bytes, default_cap: int) -> tuple[bytes, bool]:
        """Writes the default cap into an uncapped request, and asks for the final usage
        chunk on streams that did not (the client will not see it)."""
        changes: dict[str, Any] = {}
        if body.get("max_tokens") is None:
            changes["max_tokens"] = default_cap
        injected = ask_for_usage(body, changes)
        return rewritten(body, raw, changes), injected

    def usage_from_json(self, data: bytes) -> Usage | None:
        answer = parse_json_object(data)
        usage = None if answer is None else answer.get("usage")
        if not isinstance(usage, Mapping):
            return None
        return usage_moving_cached(usage, "prompt_tokens", "completion_tokens")

    def stream_meter(self, injected: bool, limit: int | None = None) -> CompletionsStreamMeter:
        return CompletionsStreamMeter(injected, limit)


OPENAI_COMPLETIONS = CompletionsFormat()
