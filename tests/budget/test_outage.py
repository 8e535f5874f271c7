"""Storage failure: open admits per replica, closed raises, and both recover by themselves."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.budget.outage import Outage
from gateway.errors import StorageUnavailable
from gateway.metering import Usage
from gateway.policy.model import Metric, OnStorageError, Unit
from gateway.storage.connection import open_store
from tests.budget.helpers import Clock, estimate, limit, policy, policy_set, subject
from tests.conftest import free_port


class Server:
    """A private redis-server we can stop and start again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gateway-outage-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", self.dir]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=0.2) as client:
                    client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(srv.dir, ignore_errors=True)


def _engine(url: str, on_error: OnStorageError) -> BudgetEngine:
    p = policy("p", limit(Metric.REQUESTS, 2, Unit.DAY), on_storage_error=on_error)
    store = open_store(url, socket_timeout=0.2)
    outage = Outage(log_interval=60, probe_interval=0)  # probe at once: no sleeping here
    return BudgetEngine(store, PolicyHolder(policy_set(p)), clock=Clock(), outage=outage)


async def test_open_falls_back_per_replica_logs_once_and_recovers(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _engine(server.url, OnStorageError.OPEN)
    caplog.set_level(logging.WARNING, logger="gateway.budget")
    try:
        assert not (await engine.reserve("r0", subject(), estimate())).degraded
        server.stop()
        decisions = [await engine.reserve(f"d{i}", subject(), estimate()) for i in range(4)]
        assert all(d.degraded for d in decisions)
        # The fallback admits what was left when the store last answered: 1 of the 2.
        assert [d.admitted for d in decisions] == [True, False, False, False]
        await engine.settle("d0", Usage())  # settled in the fallback
        await engine.settle("r0", Usage())  # best effort: Redis is down, never raises
        assert len([r for r in caplog.records if "unavailable" in r.message]) == 1
        server.start()
        await engine.upkeep()  # writes back what the fallback admitted
        back = await engine.reserve("r1", subject(), estimate())
        assert back.admitted and not back.degraded
        # Redis restarted empty (r0 is lost with it), yet knows of d0, written back: with
        # r1, 2 of 2 are spent.
        assert back.statuses[0].remaining == 0
        assert any("answers again" in r.message for r in caplog.records)
    finally:
        await engine.store.aclose()


async def test_closed_raises_storage_unavailable_then_recovers(server: Server) -> None:
    engine = _engine(server.url, OnStorageError.CLOSED)
    try:
        server.stop()
        with pytest.raises(StorageUnavailable) as caught:
            await engine.reserve("r1", subject(), estimate())
        assert caught.value.retry_after >= 1
        server.start()
        assert not (await engine.reserve("r2", subject(), estimate())).degraded
    finally:
        await engine.store.aclose()
