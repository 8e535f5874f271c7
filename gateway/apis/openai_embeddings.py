"""The OpenAI Embeddings API (``POST /v1/embeddings``).

Input only: the estimate reserves no output, and nothing is written into the body (there is
no cap to write). ``input`` takes the same shapes as a legacy completion's ``prompt`` and
counts the same way. The API never streams; should a compatible server stream anyway, the
completions meter reads its chunks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.apis.base import count_field, parse_json_object, require_model
from gateway.apis.openai_completions import CompletionsStreamMeter, token_input
from gateway.metering import RequestEstimate, Usage


class EmbeddingsFormat:
    name = "openai"
    meter = "openai-embeddings"

    def estimate(self, body: Mapping[str, Any], default_cap: int) -> RequestEstimate:
        model = require_model(body)
        inputs = token_input(body, "input")
        return RequestEstimate(
            model=model, input_tokens=inputs.tokens, max_output_tokens=0, stream=False
        )

    def with_cap(self, body: Mapping[str, Any], cap: int) -> dict[str, Any]:
        return dict(body)  # never shaped: embeddings write no output

    def prepare(self, body: Mapping[str, Any], raw: bytes, default_cap: int) -> tuple[bytes, bool]:
        return raw, False

    def usage_from_json(self, data: bytes) -> Usage | None:
        answer = parse_json_object(data)
        usage = None if answer is None else answer.get("usage")
        if not isinstance(usage, Mapping):
            return None
        return Usage(input_tokens=count_field(usage, "prompt_tokens"))

    def stream_meter(self, injected: bool, limit: int | None = None) -> CompletionsStreamMeter:
        return CompletionsStreamMeter(injected)


OPENAI_EMBEDDINGS = EmbeddingsFormat()
