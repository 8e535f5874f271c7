"""The upstream client sends a request at most once, and charges what may have been read.

The fake model API here is a raw TCP server, so that it can do what a real one does under
faults: read a whole request and drop the connection without answering, or close an idle
keep-alive connection between two requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.policy.loader import load_policy_set
from gateway.policy.model import Scope
from gateway.settings import Settings
from tests.servers import free_port, running

BODY = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x" * 300}]}
ANSWER = b'{"usage":{"input_tokens":3,"output_tokens":4}}'


class RawUpstream:
    """Reads requests; ``drop`` answers none of them (the connection closes once read),
    else each is answered and the connection closed ``idle_close`` seconds later."""

    def __init__(self, *, drop: bool, idle_close: float = 0.0) -> None:
        self.drop = drop
        self.idle_close = idle_close
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cancelled at teardown while idle: end quietly, with the socket closed.
        quiet = (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError)
        try:
            await self._serve(reader, writer)
        except quiet:
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            await reader.readexactly(length)
            self.requests += 1
            if self.drop:
                break
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
            )
            await writer.drain()
            if self.idle_close:
                await asyncio.sleep(self.idle_close)
                break


@contextlib.asynccontextmanager
async def serving(upstream: RawUpstream) -> AsyncIterator[str]:
    port = free_port()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """
            version: 1
            policies:
              - name: p
                scope: account
                limits: {tokens: 10k/day, concurrent: 1}
            """
        )
    )
    return path


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
async def test_a_request_the_upstream_read_is_never_sent_again_and_its_input_stays_charged(
    tmp_path: Path, client: str
) -> None:
    upstream = RawUpstream(drop=True)
    async with serving(upstream) as url:
        settings = Settings(upstream=url, upstream_client=client, upstream_timeout=5.0)
        app = create_app(settings, policies=load_policy_set(policy_file(tmp_path)))
        async with running(app) as gateway, httpx.AsyncClient(base_url=gateway) as http:
            response = await http.post(
                "/v1/messages", json=BODY, headers={"x-account-id": "acct-1"}
            )
            await asyncio.sleep(0.3)  # a late retry would arrive by now
            statuses = await app.state.engine.usage(Scope.ACCOUNT, "acct-1")
    assert response.status_code == 502
    assert response.json()["type"] == "error"
    assert upstream.requests == 1
    remaining = {s.limit.text: s.remaining for s in statuses}
    assert remaining["1"] == 1  # the slot is free again
    assert 10_000 - 200 < remaining["10000/day"] < 10_000  # the input estimate (~110) kept


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
async def test_a_pooled_connection_the_upstream_closed_while_idle_is_not_a_failure(
    tmp_path: Path, client: str
) -> None:
    upstream = RawUpstream(drop=False, idle_close=0.2)
    async with serving(upstream) as url:
        settings = Settings(upstream=url, upstream_client=client, upstream_timeout=5.0)
        app = create_app(settings, policies=load_policy_set(policy_file(tmp_path)))
        async with running(app) as gateway, httpx.AsyncClient(base_url=gateway) as http:
            first = await http.post("/v1/messages", json=BODY, headers={"x-account-id": "a"})
            await asyncio.sleep(0.5)  # the upstream has closed the idle connection by now
            second = await http.post("/v1/messages", json=BODY, headers={"x-account-id": "a"})
    assert (first.status_code, second.status_code) == (200, 200)
    assert upstream.requests == 2


async def test_an_upstream_that_cannot_be_reached_costs_nothing(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    app = create_app(Settings(upstream=url), policies=load_policy_set(policy_file(tmp_path)))
    async with running(app) as gateway, httpx.AsyncClient(base_url=gateway) as http:
        response = await http.post("/v1/messages", json=BODY, headers={"x-account-id": "a"})
        statuses = await app.state.engine.usage(Scope.ACCOUNT, "a")
    assert response.status_code == 502
    assert {s.limit.text: s.remaining for s in statuses} == {"1": 1, "10000/day": 10_000}


async def test_a_batch_sent_and_then_unanswered_is_charged_in_full(tmp_path: Path) -> None:
    """A batch runs on upstream without the connection: once sent, its whole reservation
    stays charged even though no answer (not even the batch id) came back."""
    batch = {
        "requests": [
            {"custom_id": str(i), "params": {**BODY, "max_tokens": 800}} for i in range(10)
        ]
    }
    upstream = RawUpstream(drop=True)
    async with serving(upstream) as url:
        settings = Settings(upstream=url, upstream_timeout=5.0)
        app = create_app(settings, policies=load_policy_set(policy_file(tmp_path)))
        async with running(app) as gateway, httpx.AsyncClient(base_url=gateway) as http:
            response = await http.post(
                "/v1/messages/batches", json=batch, headers={"x-account-id": "acct-1"}
            )
            statuses = await app.state.engine.usage(Scope.ACCOUNT, "acct-1")
    assert response.status_code == 502
    assert upstream.requests == 1
    remaining = {s.limit.text: s.remaining for s in statuses}["10000/day"]
    assert remaining < 10_000 - 10 * 800  # every request's cap, and the input, kept
