"""Anthropic's Message Batches API: submitting a batch (``POST /v1/messages/batches``).

A batch holds 1 to 100,000 Messages requests, each ``{"custom_id", "params"}``. The
estimate is their sum: each ``params`` is estimated as ``/v1/messages`` would be (input,
and ``max_tokens`` or the default cap), and ``requests`` is how many it holds. Every
request must name the same model: policies can match on the model, and a batch whose first
request names a cheap model must not carry requests for another past that model's limits.
``prepare`` writes the default cap into every request that sets none.

**A batch is charged in full at submission, and the gateway never refunds it.** The answer
to a submission is a ``message_batch`` object without usage, so ``usage_from_json`` gives
None and the proxy settles the whole reservation: every request's input estimate and its
cap. The results come hours later through GET routes the gateway forwards unmetered, as a
file of results whose usage it would have to read in full, for a batch that may since have
been cancelled, expired or fetched by someone else; no reliable moment exists to settle
against real usage. Charging at submission means a batch is never free and never slips
past a budget by arriving late. The upstream's discount on batches is a billing matter:
budgets here count tokens, which a batch uses all the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.apis.anthropic import ANTHROPIC, AnthropicStreamMeter
from gateway.apis.base import json_kind, rewritten
from gateway.errors import MalformedBody
from gateway.metering import RequestEstimate, Usage

MAX_REQUESTS = 100_000  # the API's own limit per batch


def _batch_params(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Each request's ``params``, or MalformedBody naming the first request that is wrong."""
    requests = body.get("requests")
    if not isinstance(requests, list):
        raise MalformedBody(
            "'requests' must be a list of objects with 'custom_id' and 'params'; "
            f"got {json_kind(requests)}."
        )
    if not requests or len(requests) > MAX_REQUESTS:
        raise MalformedBody(
            f"'requests' must hold 1 to {MAX_REQUESTS:,} requests; it holds {len(requests):,}."
        )
    found: list[Mapping[str, Any]] = []
    for index, item in enumerate(requests):
        if not isinstance(item, Mapping):
            raise MalformedBody(
                f"'requests[{index}]' must be an object with 'custom_id' and 'params'; "
                f"got {json_kind(item)}."
            )
        params = item.get("params")
        if not isinstance(params, Mapping):
            raise MalformedBody(
                f"'requests[{index}].params' must be an object holding a Messages request; "
                f"got {json_kind(params)}."
            )
        found.append(params)
    return found


class BatchesFormat:
    name = "anthropic"
    meter = "anthropic-message-batches"

    def estimate(self, body: Mapping[str, Any], default_cap: int) -> RequestEstimate:
        input_tokens = max_output_tokens = 0
        model = ""
        requests = _batch_params(body)
        for index, params in enumerate(requests):
            try:
                one = ANTHROPIC.estimate(params, default_cap)
            except MalformedBody as exc:
                raise MalformedBody(f"requests[{index}].params: {exc}") from exc
            if model and one.model != model:
                raise MalformedBody(
                    f"requests[{index}].params: model {one.model!r} differs from the batch's "
                    f"first model {model!r}; the gateway meters one model per batch, so send "
                    "one batch per model."
                )
            model = one.model
            input_tokens += one.input_tokens
            max_output_tokens += one.max_output_tokens
        return RequestEstimate(
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            stream=False,
            requests=len(requests),
            detached=True,
        )

    def with_cap(self, body: Mapping[str, Any], cap: int) -> dict[str, Any]:
        return dict(
            body
        )  # a batch is never shaped: its requests keep their caps, or it is refused (not shapeable)

    def prepare(self, body: Mapping[str, Any], raw: bytes, default_cap: int) -> tuple[bytes, bool]:
        requests = body.get("requests")
        if not isinstance(requests, list) or all(_capped(item) for item in requests):
            return raw, False
        forwarded = [
            item
            if _capped(item)
            else {**item, "params": {**item["params"], "max_tokens": default_cap}}
            for item in requests
        ]
        return rewritten(body, raw, {"requests": forwarded}), False

    def usage_from_json(self, data: bytes) -> Usage | None:
        return None

    def stream_meter(self, injected: bool, limit: int | None = None) -> AnthropicStreamMeter:
        return ANTHROPIC.stream_meter(injected)


def _capped(item: object) -> bool:
    """True unless ``item`` is a request whose params set no ``max_tokens``."""
    params = item.get("params") if isinstance(item, Mapping) else None
    return not isinstance(params, Mapping) or params.get("max_tokens") is not None


ANTHROPIC_BATCHES = BatchesFormat()
