from __future__ import annotations

import json
import math
from typing import Any

import pytest

from gateway.apis import FORMATS
from gateway.apis.openai_embeddings import OPENAI_EMBEDDINGS
from gateway.errors import MalformedBody
from gateway.metering import Usage

EMBEDDING = b"""{
  "object": "list",
  "data": [
    {"object": "embedding", "index": 0, "embedding": [-0.006929283, -0.005336422, 0.00451874]},
    {"object": "embedding", "index": 1, "embedding": [0.0121532, -0.0250451, 0.0043321]}
  ],
  "model": "text-embedding-3-small",
  "usage": {"prompt_tokens": 17, "total_tokens": 17}
}"""


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "text-embedding-3-small", "input": "The food was delicious", **fields}


def test_the_route_kind_reads_embeddings() -> None:
    assert FORMATS["openai-embeddings"] is OPENAI_EMBEDDINGS
    assert (OPENAI_EMBEDDINGS.name, OPENAI_EMBEDDINGS.meter) == ("openai", "openai-embeddings")


@pytest.mark.parametrize(
    ("given", "tokens"),
    [
        ("The food was delicious", math.ceil(22 / 3)),
        (
            ["The food was delicious", "and the wäiter…"],
            math.ceil((22 + len("and the wäiter…".encode())) / 3),
        ),
        ([791, 3691, 574, 18406], 4),
        ([[791, 3691], [574, 18406, 13]], 5),
    ],
)
def test_estimate_is_input_only(given: object, tokens: int) -> None:
    estimate = OPENAI_EMBEDDINGS.estimate(body(input=given), 4096)
    assert (estimate.input_tokens, estimate.max_output_tokens) == (tokens, 0)
    assert (estimate.model, estimate.stream, estimate.tokens) == (
        "text-embedding-3-small",
        False,
        tokens,
    )


def test_prepare_writes_nothing() -> None:
    raw = json.dumps(body(encoding_format="float")).encode()
    assert OPENAI_EMBEDDINGS.prepare(json.loads(raw), raw, 4096) == (raw, False)


def test_usage_from_an_answer() -> None:
    assert OPENAI_EMBEDDINGS.usage_from_json(EMBEDDING) == Usage(input_tokens=17)


@pytest.mark.parametrize("data", [b"not json", b'{"object": "list", "data": []}'])
def test_no_usage_in_an_answer_without_one(data: bytes) -> None:
    assert OPENAI_EMBEDDINGS.usage_from_json(data) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": ""}, "'model' must be a non-empty string naming the model; got a string."),
        (
            {"input": None},
            "'input' must be a string, a list of strings, a list of token ids or a list of "
            "token-id lists; got null.",
        ),
        ({"input": ["ok", ["x"]]}, "'input[1]' must be a string; got a list."),
        (
            {"input": [[1, 2], 3]},
            "'input[1]' must be a list of token ids; got the number 3.",
        ),
    ],
)
def test_bad_shapes_say_what_to_fix(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        OPENAI_EMBEDDINGS.estimate(body(**fields), 4096)
    assert str(caught.value) == message
