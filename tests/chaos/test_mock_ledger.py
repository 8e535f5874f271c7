"""The mock's ledger (``GET /mock/ledger``): what it really served, per request."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.mock import MockConfig, create_mock_app
from tests.chaos.harness import poll
from tests.servers import running

PROMPT = "Count me."
INPUT = math.ceil(len(PROMPT + "user") / 4)
BODY = {"model": "m", "max_tokens": 30, "messages": [{"role": "user", "content": PROMPT}]}
WHO = {"x-account-id": "acct-1", "x-organization-id": "org-1"}


@pytest.fixture
async def mock() -> AsyncIterator[httpx.AsyncClient]:
    """The mock on a real server: a disconnect needs a real socket."""
    app = create_mock_app(MockConfig(output_tokens=500, token_delay_s=0.01))
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def _ledger(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = (await client.get("/mock/ledger")).json()
    return entries


def _summary(entry: dict[str, Any]) -> tuple[object, ...]:
    keys = ("x-account-id", "x-organization-id", "stream", "status", "outcome")
    return (*(entry[key] for key in keys), entry["input_tokens"], entry["output_tokens"])


async def test_a_whole_answer_is_charged_its_input_and_output(mock: httpx.AsyncClient) -> None:
    assert (await mock.post("/v1/messages", json=BODY, headers=WHO)).status_code == 200
    [entry] = await _ledger(mock)
    assert _summary(entry) == (["acct-1"], ["org-1"], False, 200, "completed", INPUT, 30)
    assert entry["started_at"] <= entry["ended_at"]


async def test_an_error_answer_serves_nothing(mock: httpx.AsyncClient) -> None:
    headers = {**WHO, "x-mock-status": "500"}
    assert (await mock.post("/v1/messages", json=BODY, headers=headers)).status_code == 500
    assert (await mock.post("/v1/messages", content=b"{", headers=WHO)).status_code == 400
    assert [_summary(e)[3:] for e in await _ledger(mock)] == [
        (500, "failed", 0, 0),
        (400, "failed", 0, 0),
    ]


async def test_a_cut_stream_is_charged_the_deltas_before_the_cut(
    mock: httpx.AsyncClient,
) -> None:
    headers = {**WHO, "x-mock-break-after": "3"}
    with pytest.raises(httpx.RemoteProtocolError):
        await mock.post("/v1/messages", json={**BODY, "stream": True}, headers=headers)
    [entry] = await _ledger(mock)
    assert _summary(entry) == (["acct-1"], ["org-1"], True, 200, "broken", INPUT, 3)


async def test_a_client_that_leaves_is_charged_what_was_written(
    mock: httpx.AsyncClient,
) -> None:
    body = {**BODY, "max_tokens": 500, "stream": True}
    async with mock.stream("POST", "/v1/messages", json=body, headers=WHO) as response:
        async for chunk in response.aiter_raw():
            if b"text_delta" in chunk:
                break

    async def ended() -> bool:
        return bool((await _ledger(mock))[0]["outcome"] != "active")

    await poll(ended, 5, "The ledger noticing the client left")
    [entry] = await _ledger(mock)
    assert _summary(entry)[:6] == (["acct-1"], ["org-1"], True, 200, "cancelled", INPUT)
    assert 1 <= entry["output_tokens"] < 500


async def test_embeddings_write_no_output(mock: httpx.AsyncClient) -> None:
    body = {"model": "e", "input": ["one", "two"]}
    assert (await mock.post("/v1/embeddings", json=body)).status_code == 200
    [entry] = await _ledger(mock)
    assert (entry["outcome"], entry["input_tokens"], entry["output_tokens"]) == (
        "completed",
        2,
        0,
    )


async def test_completions_charge_every_choice(mock: httpx.AsyncClient) -> None:
    body = {"model": "c", "prompt": "hi", "max_tokens": 4, "n": 3}
    assert (await mock.post("/v1/completions", json=body)).status_code == 200
    [entry] = await _ledger(mock)
    assert entry["output_tokens"] == 12


async def test_the_ledger_is_not_in_the_log_and_resets(mock: httpx.AsyncClient) -> None:
    await mock.post("/v1/messages", json=BODY)
    await mock.get("/v1/models")
    await mock.get("/mock/ledger")
    assert [e["target"] for e in (await mock.get("/mock/log")).json()] == [
        "/v1/messages",
        "/v1/models",
    ]
    assert len(await _ledger(mock)) == 1  # only ✱ routes are in the ledger
    await mock.post("/mock/reset")
    assert await _ledger(mock) == []
