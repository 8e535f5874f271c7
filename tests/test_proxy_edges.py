"""Edges of the request path: paths that could dodge metering, odd bodies and headers, and a
client that leaves while its reservation is being made."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.admission import Gate
from gateway.app import create_app
from gateway.budget.decision import Decision, Subject
from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.metering import RequestEstimate
from gateway.policy.loader import load_policy_set
from gateway.policy.model import PolicySet, Scope
from gateway.proxy import Proxy
from gateway.settings import Settings
from gateway.storage.budget_memory import MemoryStore
from gateway.upstream import Timeouts, open_upstream
from tests.servers import running
from tests.upstreams import Script, ScriptedUpstream

BODY = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
ACCOUNT = {"x-account-id": "acct-1"}


def policy_set(tmp_path: Path, limits: str) -> PolicySet:
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            version: 1
            policies:
              - name: p
                scope: account
                limits: {limits}
            """
        )
    )
    return load_policy_set(path)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[ScriptedUpstream, str]]:
    fake = ScriptedUpstream()
    fake.script = Script(
        headers=[
            (b"content-type", b"application/json"),
            (b"anthropic-ratelimit-requests-remaining", b"999"),
        ],
        chunks=[b'{"usage": {"input_tokens": 3, "output_tokens": 4}}'],
    )
    async with running(fake) as url:
        yield fake, url


@pytest.mark.parametrize("path", ["/v1/./messages", "/v1/x/../messages", "/v1//messages"])
async def test_paths_that_could_dodge_metering_are_refused(
    tmp_path: Path, upstream: tuple[ScriptedUpstream, str], path: str
) -> None:
    fake, url = upstream
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 0/minute}"))
    async with running(app) as gateway:
        status, body = await raw_post(gateway, path)  # httpx would normalize the path itself
    assert status == 400
    assert b"send it normalized" in body
    assert fake.seen == []


async def raw_post(base_url: str, path: str) -> tuple[int, bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    payload = b'{"model":"m","max_tokens":10,"messages":[]}'
    writer.write(
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\nx-account-id: acct-1\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
        "connection: close\r\n\r\n".encode()
        + payload
    )
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_a_trailing_slash_is_not_a_way_around_the_meter(
    tmp_path: Path, upstream: tuple[ScriptedUpstream, str]
) -> None:
    fake, url = upstream
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 0/minute}"))
    async with running(app) as gateway, httpx.AsyncClient(base_url=gateway) as client:
        response = await client.post("/v1/messages/", json=BODY, headers=ACCOUNT)
    assert response.status_code == 400
    assert "empty" in response.json()["error"]["message"]
    assert fake.seen == []


async def test_a_lone_surrogate_is_a_400_in_the_apis_shape(
    tmp_path: Path, upstream: tuple[ScriptedUpstream, str]
) -> None:
    fake, url = upstream
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 9/minute}"))
    raw = b'{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"\\ud800"}]}'
    async with running(app) as gateway, httpx.AsyncClient(base_url=gateway) as client:
        response = await client.post("/v1/messages", content=raw, headers=ACCOUNT)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "lone surrogate" in response.json()["error"]["message"]
    assert fake.seen == []


async def test_the_gateways_rate_limit_headers_replace_the_upstreams(
    tmp_path: Path, upstream: tuple[ScriptedUpstream, str]
) -> None:
    _, url = upstream
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 9/minute}"))
    async with running(app) as gateway, httpx.AsyncClient(base_url=gateway) as client:
        response = await client.post("/v1/messages", json=BODY, headers=ACCOUNT)
    assert response.status_code == 200
    assert response.headers.get_list("anthropic-ratelimit-requests-remaining") == ["8"]


async def test_a_repeated_account_header_is_refused(
    tmp_path: Path, upstream: tuple[ScriptedUpstream, str]
) -> None:
    fake, url = upstream
    app = create_app(Settings(upstream=url), policies=policy_set(tmp_path, "{requests: 9/minute}"))
    headers = [("x-account-id", "acct-1"), ("x-account-id", "acct-2")]
    async with running(app) as gateway, httpx.AsyncClient(base_url=gateway) as client:
        response = await client.post("/v1/messages", json=BODY, headers=headers)
    assert response.status_code == 401
    assert "came more than once" in response.json()["error"]["message"]
    assert fake.seen == []


class SlowEngine:
    """The real engine, answering late, as a Redis under load does: the client can leave
    after the store has debited and before the answer arrives."""

    def __init__(self, engine: BudgetEngine, started: asyncio.Event) -> None:
        self.engine, self.started = engine, started

    async def reserve(
        self, request_id: str, subject: Subject, estimate: RequestEstimate
    ) -> Decision:
        decision = await self.engine.reserve(request_id, subject, estimate)
        self.started.set()
        await asyncio.sleep(0.5)
        return decision

    async def settle(self, request_id: str, usage: object) -> None:
        await self.engine.settle(request_id, usage)  # type: ignore[arg-type]


async def test_a_client_leaving_during_admission_does_not_hold_its_reservation(
    tmp_path: Path, upstream: tuple[ScriptedUpstream, str]
) -> None:
    fake, url = upstream
    holder = PolicyHolder(policy_set(tmp_path, "{concurrent: 1, tokens: 1k/day}"))
    engine = BudgetEngine(MemoryStore(), holder)
    started = asyncio.Event()
    gate = Gate(holder, SlowEngine(engine, started))
    forward = open_upstream("aiohttp", url, Timeouts(5, 5))
    proxy = Proxy(forward, gate, [gate.settle], 1 << 20)
    async with running(proxy) as gateway, httpx.AsyncClient(base_url=gateway) as client:
        request = asyncio.create_task(client.post("/v1/messages", json=BODY, headers=ACCOUNT))
        await asyncio.wait_for(started.wait(), 5)
        request.cancel()  # the client hangs up while the answer is on its way
        with pytest.raises(asyncio.CancelledError):
            await request
        for _ in range(100):
            statuses = await engine.usage(Scope.ACCOUNT, "acct-1")
            if all(s.remaining == s.limit.amount for s in statuses):
                break
            await asyncio.sleep(0.05)
        assert {s.limit.text: s.remaining for s in statuses} == {"1": 1, "1000/day": 1000}
    await forward.aclose()
    assert fake.seen == []  # nothing was forwarded for a client that had gone


async def test_identity_and_signal_headers_stay_at_the_gateway(
    tmp_path: Path, upstream: tuple[ScriptedUpstream, str]
) -> None:
    fake, url = upstream
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """
            version: 1
            identity:
              attribute_headers: {tier: x-account-tier}
            policies: []
            clusters:
              link_by:
                - header: x-payment-fingerprint
            """
        )
    )
    app = create_app(Settings(upstream=url), policies=load_policy_set(path))
    headers = {
        "x-account-id": "acct-1",
        "x-organization-id": "org-1",
        "x-account-tier": "free",
        "x-payment-fingerprint": "card-123",
        "anthropic-version": "2023-06-01",
    }
    async with running(app) as gateway, httpx.AsyncClient(base_url=gateway) as client:
        response = await client.post("/v1/messages", json=BODY, headers=headers)
    assert response.status_code == 200
    forwarded = {name.decode() for name, _ in fake.seen[0].headers}
    assert "anthropic-version" in forwarded
    assert not forwarded & {
        "x-account-id",
        "x-organization-id",
        "x-account-tier",
        "x-payment-fingerprint",
    }
