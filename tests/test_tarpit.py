"""``action: slow``: a request that does not fit is held until it does, within
``max_delay``, over HTTP with real servers; the tarpit's cap, and a client that leaves."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.budget.decision import Decision, Refusal
from gateway.decision_log import read_log
from gateway.mock_upstream import MockConfig, create_mock_app
from gateway.policy.loader import load_policy_set
from gateway.policy.model import Limit, Metric, PolicySet, Scope, Unit
from gateway.settings import Settings
from gateway.tarpit import Tarpit, slow_wait
from tests.servers import running

ACCOUNT = {"x-account-id": "acct-1"}
BODY = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi."}]}


def policies(tmp_path: Path, limits: str, max_delay: int = 5, extra: str = "") -> PolicySet:
    path = tmp_path / "p.yaml"
    text = f"""
        version: 1
        policies:
          - name: held
            scope: account
            action: slow
            max_delay: {max_delay}
            limits: {limits}
        {extra}
        """
    path.write_text(textwrap.dedent(text))
    return load_policy_set(path)


class FakeTime:
    """One clock for the engine and the tarpit; a held request's sleep waits for ``go``,
    then moves the clock on by what it slept."""

    def __init__(self) -> None:
        self.now = 1_790_000_000.0
        self.go = asyncio.Event()
        self.sleeping = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeping += 1
        try:
            await self.go.wait()
        finally:
            self.sleeping -= 1
        self.now += seconds


async def until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail("not within 5 s")


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async with running(create_mock_app(MockConfig(output_tokens=5, token_delay_s=0))) as url:
        yield url


async def test_a_request_that_fits_after_its_retry_after_is_held_then_admitted(
    tmp_path: Path, upstream: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "decisions.jsonl"
    settings = Settings(upstream=upstream, decision_log=str(log))
    app = create_app(settings, policies=policies(tmp_path, "{requests: 1/second}"))
    with caplog.at_level(logging.INFO, logger="gateway.admission"):
        async with running(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            first = await client.post("/v1/messages", json=BODY, headers=ACCOUNT)
            started = time.monotonic()
            second = await client.post("/v1/messages", json=BODY, headers=ACCOUNT)
            waited = time.monotonic() - started
    assert first.status_code == second.status_code == 200  # a wait, never a 429
    assert 0.3 < waited < 5
    lines = read_log(log)
    assert [line["decision"] for line in lines] == ["admitted", "admitted"]
    assert lines[0]["delayed_s"] == 0
    assert 0.3 < lines[1]["delayed_s"] < 5
    # One line, for the request held: not one "delayed_s=0.000" for every request too.
    slowed = [r for r in caplog.records if r.getMessage().startswith("slowed request_id=")]
    assert len(slowed) == 1


async def test_a_wait_longer_than_max_delay_is_refused_at_once(
    tmp_path: Path, upstream: str
) -> None:
    app = create_app(
        Settings(upstream=upstream), policies=policies(tmp_path, "{requests: 1/minute}")
    )
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post("/v1/messages", json=BODY, headers=ACCOUNT)
        started = time.monotonic()
        refused = await client.post("/v1/messages", json=BODY, headers=ACCOUNT)
        assert time.monotonic() - started < 2
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"


async def test_past_the_tarpits_cap_a_request_is_refused_and_the_held_ones_get_through(
    tmp_path: Path, upstream: str
) -> None:
    fake = FakeTime()
    tarpit = Tarpit(2, sleep=fake.sleep, clock=fake)
    policy_set = policies(tmp_path, "{requests: 1/second}", max_delay=10)
    app = create_app(Settings(upstream=upstream), policies=policy_set, clock=fake, tarpit=tarpit)
    async with running(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.post("/v1/messages", json=BODY, headers=ACCOUNT)).is_success
        held = [
            asyncio.create_task(client.post("/v1/messages", json=BODY, headers=ACCOUNT))
            for _ in range(2)
        ]
        await until(lambda: tarpit.held == 2)
        overflow = await client.post("/v1/messages", json=BODY, headers=ACCOUNT)
        assert overflow.status_code == 429 and overflow.headers["retry-after"] == "1"
        assert not any(task.done() for task in held)
        fake.go.set()
        answers = await asyncio.gather(*held)
    assert [answer.status_code for answer in answers] == [200, 200]
    assert tarpit.held == 0


async def test_a_client_that_leaves_while_held_is_let_go_and_reserves_nothing(
    tmp_path: Path, upstream: str
) -> None:
    fake = FakeTime()
    tarpit = Tarpit(sleep=fake.sleep, clock=fake)
    policy_set = policies(tmp_path, "{requests: 1/second, tokens: 100k/day}")
    app = create_app(Settings(upstream=upstream), policies=policy_set, clock=fake, tarpit=tarpit)
    async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post("/v1/messages", json=BODY, headers=ACCOUNT)
        before = await app.state.engine.usage(Scope.ACCOUNT, "acct-1")
        request = asyncio.create_task(client.post("/v1/messages", json=BODY, headers=ACCOUNT))
        await until(lambda: tarpit.held == 1)
        request.cancel()  # the client hangs up while it is held
        with pytest.raises(asyncio.CancelledError):
            await request
        await until(lambda: tarpit.held == 0)
        after = await app.state.engine.usage(Scope.ACCOUNT, "acct-1")
        ledger = (await client.get(f"{upstream}/mock/ledger")).json()
    assert tarpit.held == 0 and fake.sleeping == 0
    assert [s.remaining for s in after] == [s.remaining for s in before]
    assert len(ledger) == 1  # only the first request reached the model


def refusal(policy: str, retry_after: float | None) -> Refusal:
    limit = Limit(Metric.REQUESTS, 1, Unit.SECOND)
    return Refusal(policy, Scope.ACCOUNT, "acct-1", limit, 1, retry_after)


def test_only_refusals_by_slow_policies_alone_are_held(tmp_path: Path) -> None:
    policy_set = policies(
        tmp_path,
        "{requests: 1/second}",
        extra="""  - name: plain
            scope: account
            limits: {tokens: 1k/day}""",
    )
    slow, plain = refusal("held", 1.5), refusal("plain", 0.5)

    def refused(*refusals: Refusal) -> Decision:
        return Decision("r", False, refusals[0], refusals=refusals)

    assert slow_wait(refused(slow), policy_set, 0) == 1.5
    assert slow_wait(refused(slow), policy_set, 4) is None  # past max_delay 5 in all
    assert slow_wait(refused(slow, plain), policy_set, 0) is None
    assert slow_wait(refused(refusal("held", None)), policy_set, 0) is None  # never fits
    assert slow_wait(Decision("r", True), policy_set, 0) is None
