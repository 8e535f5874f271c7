from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.apis import ANTHROPIC, FORMATS
from gateway.apis.anthropic_batches import ANTHROPIC_BATCHES
from gateway.errors import MalformedBody

CAP = 4096

SUBMITTED = b"""{
  "id": "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
  "type": "message_batch",
  "processing_status": "in_progress",
  "request_counts": {"processing": 2, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
  "ended_at": null,
  "created_at": "2026-01-01T18:37:24.100435Z",
  "expires_at": "2026-01-02T18:37:24.100435Z",
  "cancel_initiated_at": null,
  "results_url": null
}"""


def params(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": text}], **fields}


def batch(*requests: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests": [
            {"custom_id": f"req-{index}", "params": request}
            for index, request in enumerate(requests)
        ]
    }


def test_the_route_kind_reads_batch_submissions() -> None:
    assert FORMATS["anthropic-message-batches"] is ANTHROPIC_BATCHES
    assert ANTHROPIC_BATCHES.name == "anthropic"


def test_estimate_sums_what_each_request_would_reserve() -> None:
    requests = [
        params("Hello, world", max_tokens=1024),
        params("Résume ce texte en une phrase, s'il te plaît.", max_tokens=200, system="Bref."),
        params("Hi"),  # no cap: the default
    ]
    estimate = ANTHROPIC_BATCHES.estimate(batch(*requests), CAP)
    each = [ANTHROPIC.estimate(request, CAP) for request in requests]
    assert estimate.input_tokens == sum(one.input_tokens for one in each)
    assert estimate.max_output_tokens == 1024 + 200 + CAP
    assert (estimate.requests, estimate.stream, estimate.model) == (3, False, "claude-haiku-4-5")


def test_a_batch_mixing_models_is_refused() -> None:
    mixed = batch(params("Hi", max_tokens=5), params("Hi", model="claude-opus-4-1"))
    with pytest.raises(MalformedBody, match=r"requests\[1\].params: model 'claude-opus-4-1'"):
        ANTHROPIC_BATCHES.estimate(mixed, CAP)


def test_a_large_batch_reserves_one_request_for_each() -> None:
    one = params("Classify this support ticket: the printer is on fire.", max_tokens=16)
    estimate = ANTHROPIC_BATCHES.estimate(batch(*[one] * 20_000), CAP)
    single = ANTHROPIC.estimate(one, CAP)
    assert estimate.requests == 20_000
    assert estimate.input_tokens == 20_000 * single.input_tokens
    assert estimate.max_output_tokens == 20_000 * 16


def test_prepare_caps_only_the_requests_without_a_cap() -> None:
    body = batch(params("a", max_tokens=10), params("b"), params("c", max_tokens=None))
    raw = json.dumps(body).encode()
    forwarded, injected = ANTHROPIC_BATCHES.prepare(json.loads(raw), raw, CAP)
    sent = json.loads(forwarded)
    assert [item["params"]["max_tokens"] for item in sent["requests"]] == [10, CAP, CAP]
    assert [item["custom_id"] for item in sent["requests"]] == ["req-0", "req-1", "req-2"]
    assert sent["requests"][1]["params"] == {**params("b"), "max_tokens": CAP}
    assert injected is False


def test_prepare_forwards_a_fully_capped_batch_byte_for_byte() -> None:
    raw = json.dumps(batch(params("a", max_tokens=10), params("b", max_tokens=5)), indent=1)
    forwarded, injected = ANTHROPIC_BATCHES.prepare(json.loads(raw), raw.encode(), CAP)
    assert (forwarded, injected) == (raw.encode(), False)


def test_a_submission_holds_no_usage_so_the_reservation_is_charged() -> None:
    assert ANTHROPIC_BATCHES.usage_from_json(SUBMITTED) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {},
            "'requests' must be a list of objects with 'custom_id' and 'params'; got null.",
        ),
        ({"requests": []}, "'requests' must hold 1 to 100,000 requests; it holds 0."),
        (
            {"requests": [{"custom_id": "x", "params": {}}] * 100_001},
            "'requests' must hold 1 to 100,000 requests; it holds 100,001.",
        ),
        (
            {"requests": [{"custom_id": "a", "params": params("a")}, "b"]},
            "'requests[1]' must be an object with 'custom_id' and 'params'; got a string.",
        ),
        (
            {"requests": [{"custom_id": "a"}]},
            "'requests[0].params' must be an object holding a Messages request; got null.",
        ),
        (
            batch(params("a"), params("b"), params("c"), params("d", max_tokens=0)),
            "requests[3].params: 'max_tokens' must be a positive integer; got the number 0.",
        ),
        (
            batch(params("a"), {"model": "claude-haiku-4-5", "messages": "hi"}),
            "requests[1].params: 'messages' must be a list of message objects; got a string.",
        ),
        (
            batch({"messages": []}),
            "requests[0].params: 'model' must be a non-empty string naming the model; got null.",
        ),
    ],
)
def test_bad_shapes_say_which_request_to_fix(body: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        ANTHROPIC_BATCHES.estimate(body, CAP)
    assert str(caught.value) == message
