"""Metrics an on-call can trust: every request counted whichever worker takes the scrape,
refusals split by reason and policy, the gateway's own answers apart from the upstream's, a
failed reload as a gauge, and an x-request-id on every answer that the decision log holds."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_admin_app, create_app
from gateway.metrics import Metrics
from gateway.policy.model import Metric, Unit
from gateway.settings import Settings
from tests.admin.conftest import AUTH, TOKEN, in_process
from tests.budget.helpers import limit, policy, policy_set
from tests.chaos.processes import PrivateRedis
from tests.prometheus import value
from tests.servers import free_port, running
from tests.upstreams import Script, ScriptedUpstream

BIN = Path(sys.executable).parent
BODY = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
POLICY_FILE = """version: 1
policies:
  - name: acct-daily
    scope: account
    limits:
      requests: {requests}
"""


def wait_for(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=15)


class TwoWorkers:
    def __init__(self, process: subprocess.Popen[bytes], port: int, admin_port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.admin_url = f"http://127.0.0.1:{admin_port}"

    def scrape(self) -> str:
        # A new connection each time, so that the kernel may hand it to either worker.
        return httpx.get(f"{self.admin_url}/metrics", timeout=5).text


@pytest.fixture
def two_workers(redis_url: str, tmp_path: Path) -> Iterator[TwoWorkers]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    with serving_two_workers(redis_url, tmp_path) as served:
        yield served


@contextlib.contextmanager
def serving_two_workers(storage: str, tmp_path: Path) -> Iterator[TwoWorkers]:
    """``gateway serve --workers 2`` on ``storage`` with a mock upstream, on free ports."""
    (tmp_path / "policies.yaml").write_text(POLICY_FILE.format(requests="1000/day"))
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "GATEWAY_ADMIN_TOKEN": TOKEN, "TMPDIR": str(temp)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    mock_port, port, admin_port = free_port(), free_port(), free_port()
    log = (tmp_path / "processes.log").open("wb")
    mock = subprocess.Popen(
        [str(BIN / "gateway"), "mock-upstream", "--port", str(mock_port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    args = [str(BIN / "gateway"), "serve", "--workers", "2", "--storage", storage]
    args += ["--upstream", f"http://127.0.0.1:{mock_port}"]
    args += ["--policies", str(tmp_path / "policies.yaml")]
    args += ["--port", str(port), "--admin-port", str(admin_port)]
    gateway = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        served = TwoWorkers(gateway, port, admin_port)
        wait_for(lambda: answers(f"http://127.0.0.1:{mock_port}/mock/stats"), 30, "mock")
        wait_for(lambda: answers(f"{served.admin_url}/readyz"), 30, "the gateway ready")
        wait_for(lambda: len(children(gateway.pid)) == 2, 30, "two workers")
        yield served
    finally:
        stop(gateway, mock)
        log.close()
    # The workers' metric files were the serve's own, and went with it.
    assert list(temp.iterdir()) == []


def test_every_scrape_of_two_workers_counts_every_request(two_workers: TwoWorkers) -> None:
    for i in range(40):
        headers = {"x-account-id": f"acct-{i % 4}"}
        # A new connection for each request, so that both workers take some.
        response = httpx.post(f"{two_workers.url}/v1/messages", json=BODY, headers=headers)
        assert response.status_code == 200, response.text
    for _ in range(8):
        text = two_workers.scrape()
        assert value(text, "gateway_requests_total") == 40
        assert value(text, "gateway_requests_total", answered_by="upstream") == 40
        assert value(text, "gateway_exchanges_total", outcome="complete") == 40
        assert value(text, "gateway_decisions_total", result="admitted") == 40
        assert value(text, "gateway_storage_up") == 1
        assert value(text, "gateway_policy_reload_failed") == 0

    # A worker that dies takes its gauges with it, never the requests it counted.
    worker = children(two_workers.process.pid)[0]
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: worker not in children(two_workers.process.pid), 10, "the worker reaped")
    for _ in range(4):
        text = two_workers.scrape()
        assert value(text, "gateway_requests_total") == 40
        assert value(text, "gateway_storage_up") == 1


def test_a_storage_outage_shows_in_every_scrape_of_two_workers(tmp_path: Path) -> None:
    store = PrivateRedis(tmp_path / "redis")
    store.start()
    try:
        with serving_two_workers(store.url, tmp_path) as served:
            headers = {"x-account-id": "acct-1"}
            url = f"{served.url}/v1/messages"
            assert httpx.post(url, json=BODY, headers=headers).status_code == 200
            store.kill()
            # Each worker finds the store gone by its next call or upkeep tick (every 5 s).
            wait_for(lambda: value(served.scrape(), "gateway_storage_up") == 0, 30, "down")
            for _ in range(8):
                text = served.scrape()
                assert value(text, "gateway_storage_up") == 0
                assert value(text, "gateway_storage_errors_total", kind="down") >= 1
            store.start()
            wait_for(lambda: value(served.scrape(), "gateway_storage_up") == 1, 30, "up")
    finally:
        store.stop()


def test_one_worker_never_uses_an_inherited_multiprocess_directory(tmp_path: Path) -> None:
    """A PROMETHEUS_MULTIPROC_DIR left in the environment (another app's, an earlier
    serve's) must not be where a one-worker serve writes or reads: its old files would add
    to this serve's counts, and a directory that does not exist stopped the gateway."""
    inherited = tmp_path / "inherited"
    inherited.mkdir()
    (tmp_path / "policies.yaml").write_text(POLICY_FILE.format(requests="1000/day"))
    mock_port, port, admin_port = free_port(), free_port(), free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    for variable, directory in [
        ("PROMETHEUS_MULTIPROC_DIR", inherited),
        ("prometheus_multiproc_dir", tmp_path / "missing"),
    ]:
        env = {**os.environ, "GATEWAY_ADMIN_TOKEN": TOKEN, variable: str(directory)}
        log = (tmp_path / "processes.log").open("ab")
        mock = subprocess.Popen(
            [str(BIN / "gateway"), "mock-upstream", "--port", str(mock_port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        args = [str(BIN / "gateway"), "serve", "--upstream", f"http://127.0.0.1:{mock_port}"]
        args += ["--policies", str(tmp_path / "policies.yaml")]
        args += ["--port", str(port), "--admin-port", str(admin_port)]
        gateway = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for(lambda: answers(f"http://127.0.0.1:{mock_port}/mock/stats"), 30, "mock")
            wait_for(lambda: answers(f"{admin}/readyz"), 30, f"ready with {variable} set")
            url = f"http://127.0.0.1:{port}/v1/messages"
            response = httpx.post(url, json=BODY, headers={"x-account-id": "acct-1"})
            assert response.status_code == 200, response.text
            text = httpx.get(f"{admin}/metrics", timeout=5).text
            assert value(text, "gateway_requests_total") == 1
        finally:
            stop(gateway, mock)
            log.close()
        assert not directory.exists() or list(directory.iterdir()) == []


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[ScriptedUpstream, str]]:
    fake = ScriptedUpstream()
    async with running(fake) as url:
        yield fake, url


async def test_refusals_are_split_by_reason_and_policy_and_apart_from_the_upstream(
    upstream: tuple[ScriptedUpstream, str], tmp_path: Path
) -> None:
    fake, url = upstream
    decisions = tmp_path / "decisions.jsonl"
    settings = Settings(upstream=url, max_body_bytes=2000, decision_log=str(decisions))
    one_a_day = policy_set(policy("one-a-day", limit(Metric.REQUESTS, 1, Unit.DAY)))
    seen: dict[int, list[str]] = {}
    async with in_process(settings, one_a_day) as gw:

        async def send(
            account: str | None, json: object = None, content: bytes | None = None
        ) -> httpx.Response:
            headers = {"x-account-id": account} if account else {}
            headers["x-request-id"] = "client-chosen-id"  # never taken: see docs/metrics.md
            response = await gw.client.post(
                "/v1/messages", headers=headers, json=json, content=content
            )
            seen.setdefault(response.status_code, []).append(response.headers["x-request-id"])
            return response

        fake.script = Script(
            status=400, headers=[(b"x-request-id", b"req_upstream_1")], chunks=[b"{}"]
        )
        upstream_400 = await send("acct-1", json=BODY)
        assert upstream_400.headers["x-upstream-request-id"] == "req_upstream_1"
        assert (await send("acct-1", json=BODY)).status_code == 429
        assert (await send(None, json=BODY)).status_code == 401
        assert (await send("acct-2", content=b"{not json")).status_code == 400
        assert (await send("acct-3", json={**BODY, "pad": "x" * 3000})).status_code == 413
        not_found = await gw.client.get("/v1/nowhere", headers={"x-account-id": "acct-4"})
        seen.setdefault(404, []).append(not_found.headers["x-request-id"])
        text = (await gw.admin.get("/metrics")).text

    assert sorted(seen) == [400, 401, 404, 413, 429]
    ids = [request_id for group in seen.values() for request_id in group]
    assert len(set(ids)) == len(ids) == 6
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)  # the gateway's, not the client's
    refusals = {
        (labels["reason"], labels["policy"]): sample_value
        for family in text_string_to_metric_families(text)
        for name, labels, sample_value, *_ in family.samples
        if name == "gateway_refusals_total"
    }
    assert refusals == {
        ("rate_limit", "one-a-day"): 1,
        ("authentication", ""): 1,
        ("bad_request", ""): 1,
        ("too_large", ""): 1,
        ("not_found", ""): 1,
    }
    # The upstream's 400 is the upstream's; the gateway's 4xx answers are the gateway's.
    assert value(text, "gateway_requests_total", answered_by="upstream", status_class="4xx") == 1
    assert value(text, "gateway_requests_total", answered_by="gateway", status_class="4xx") == 5
    assert value(text, "gateway_upstream_duration_seconds_count", status_class="4xx") == 1
    assert value(text, "gateway_requests_total") == 6
    # The decision log's lines carry the ids the client got.
    logged = [json.loads(line)["request_id"] for line in decisions.read_text().splitlines()]
    assert seen[400][0] in logged and seen[429][0] in logged


async def test_an_unreachable_upstream_is_an_upstream_failure_not_a_refusal() -> None:
    settings = Settings(upstream=f"http://127.0.0.1:{free_port()}")
    async with in_process(settings, policy_set()) as gw:
        response = await gw.client.post(
            "/v1/messages", json=BODY, headers={"x-account-id": "acct-1"}
        )
        text = (await gw.admin.get("/metrics")).text
    assert response.status_code == 502 and len(response.headers["x-request-id"]) == 32
    assert value(text, "gateway_upstream_failures_total", kind="unreachable") == 1
    assert value(text, "gateway_refusals_total") == 0
    assert value(text, "gateway_upstream_duration_seconds_count") == 0


async def test_a_failed_reload_shows_as_a_gauge_until_one_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(POLICY_FILE.format(requests="100/day"))
    settings = Settings(upstream="http://127.0.0.1:9", policies=str(path), admin_token=TOKEN)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_admin_app(app)), base_url="http://admin"
        ) as admin,
    ):
        first = (await admin.get("/readyz")).json()["policy_version"]
        text = (await admin.get("/metrics")).text
        assert value(text, "gateway_policy_reload_failed") == 0
        assert value(text, "gateway_policy_info", version=first) == 1

        path.write_text(POLICY_FILE.format(requests="5 M/day"))
        assert (await admin.post("/v1/policies/reload", headers=AUTH)).status_code == 422
        text = (await admin.get("/metrics")).text
        assert value(text, "gateway_policy_reload_failed") == 1
        assert value(text, "gateway_policy_info", version=first) == 1

        path.write_text(POLICY_FILE.format(requests="200/day"))
        reloaded = await admin.post("/v1/policies/reload", headers=AUTH)
        assert reloaded.status_code == 200, reloaded.text
        text = (await admin.get("/metrics")).text
        assert value(text, "gateway_policy_reload_failed") == 0
        assert value(text, "gateway_policy_info", version=reloaded.json()["version"]) == 1
        assert value(text, "gateway_policy_info", version=first) == 0


def test_docs_list_every_metric_the_gateway_exports() -> None:
    """Alert rules and dashboards are written from docs/metrics.md: it must name exactly
    what /metrics exports."""
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in Metrics().registry.collect()
    }
    docs = (Path(__file__).parents[1] / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(gateway_\w+)`", docs, flags=re.MULTILINE))
    assert documented == exported
