"""``redis+sentinel://`` against real processes: a private master, a replica and three
sentinels (``redis-server --sentinel``) on free ports; the budget engine and the override
channel run through the sentinel-discovered master, and then through a fail-over."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio

from gateway.budget.store import ROLLING, Bucket
from gateway.errors import ConfigError, StorageError
from gateway.storage.budget_redis import RedisStore
from gateway.storage.connection import close, open_store
from gateway.storage.live_redis import RedisLiveStore
from gateway.storage.sentinel import SentinelMaster
from tests.conftest import free_port

MASTER = "mymaster"
DEADLINE = 60.0


def _poll(what: str, check: Callable[[], object], deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > end:
            pytest.fail(f"{what} did not happen within {deadline:.0f} s.", pytrace=False)
        time.sleep(0.1)


@dataclass
class Sentinels:
    """A master, its replica and three sentinels monitoring them as ``mymaster``."""

    dir: Path
    processes: dict[int, subprocess.Popen[bytes]]
    master: int
    replica: int
    sentinels: list[int]

    @property
    def uri(self) -> str:
        return (
            "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinels) + "/" + MASTER
        )

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)

    def master_seen(self) -> int | None:
        """The master's port if every sentinel names the same, up one."""
        seen = set()
        for port in self.sentinels:
            with self.client(port) as sentinel:
                state = sentinel.sentinel_master(MASTER)
            if state["is_sdown"] or state["is_odown"] or state["num-other-sentinels"] < 2:
                return None
            seen.add(int(state["port"]))
        return seen.pop() if len(seen) == 1 else None

    def start(self, port: int, *args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on the PATH: install Redis.", pytrace=False)
        self.processes[port] = subprocess.Popen(
            [binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def server(self, port: int, *args: str) -> None:
        data = self.dir / str(port)
        data.mkdir()
        common = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(data)]
        self.start(port, *common, "--appendonly", "no", *args)

    def sentinel(self, port: int) -> None:
        conf = self.dir / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.master} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
        )
        self.start(port, str(conf), "--sentinel")

    def kill(self, port: int) -> None:
        proc = self.processes.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.processes.values():
            proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[Sentinels]:
    ports = [free_port() for _ in range(5)]
    setup = Sentinels(tmp_path, {}, ports[0], ports[1], ports[2:])
    try:
        setup.server(setup.master)
        setup.server(setup.replica, "--replicaof", "127.0.0.1", str(setup.master))

        def master_up() -> bool:
            with setup.client(setup.master) as master:
                return bool(master.ping())

        _poll("the master answering", master_up)

        def replica_synced() -> bool:
            with setup.client(setup.replica) as replica:
                return bool(replica.info("replication")["master_link_status"] == "up")

        _poll("the replica syncing", replica_synced)
        for port in setup.sentinels:
            setup.sentinel(port)

        def replica_known() -> bool:
            with setup.client(setup.sentinels[0]) as sentinel:
                return len(sentinel.sentinel_slaves(MASTER)) == 1

        _poll(
            "every sentinel seeing the master and the others",
            lambda: setup.master_seen() == setup.master,
        )
        _poll("the sentinels knowing the replica", replica_known)
        yield setup
    finally:
        setup.stop()


def limit(amount: int) -> list[Bucket]:
    return [Bucket("s:account:a:requests:r", "requests", ROLLING, 3600, amount, 1)]


async def test_the_engine_and_the_override_channel_run_through_the_sentinel_master(
    sentinels: Sentinels,
) -> None:
    store = open_store(sentinels.uri, prefix="s")
    assert isinstance(store, RedisStore)
    assert isinstance(store.client, SentinelMaster)
    try:
        admitted = [
            (await store.reserve(f"r{i}", limit(3), ttl=60, now=None)).admitted for i in range(5)
        ]
        assert admitted == [True, True, True, False, False]
        assert await store.settle("r0", {"requests": 1}, now=None)
        with sentinels.client(sentinels.master) as master:
            assert master.keys("s:*")  # the counters live on the master the sentinels named

        live = RedisLiveStore(store.client, prefix="s")
        assert await live.wait_for_notice(0.1)  # the first call subscribes
        await live.put_override("acct", '{"x": 1}', now=time.time())
        end = time.monotonic() + DEADLINE
        while not await live.wait_for_notice(0.5):
            assert time.monotonic() < end, "the override notice never came"
        assert (await live.load_overrides())[1] == ['{"x": 1}']
        await live.aclose()
    finally:
        await close(store)


async def test_a_failover_is_served_through_without_restart_or_over_admission(
    sentinels: Sentinels,
) -> None:
    store = open_store(sentinels.uri, prefix="f")
    try:
        for i in range(2):
            assert (await store.reserve(f"r{i}", limit(3), ttl=60, now=None)).admitted
        with sentinels.client(sentinels.master) as master:
            assert master.execute_command("WAIT", 1, 5000) == 1  # the replica has the debits
        sentinels.kill(sentinels.master)
        _poll(
            "a sentinel fail-over to the replica",
            lambda: sentinels.master_seen() == sentinels.replica,
        )

        # The same store, never reopened: calls fail while the old master is gone, then
        # reach the promoted replica. Polled with a read, so nothing is debited twice.
        end = time.monotonic() + DEADLINE
        while True:
            try:
                await store.peek(limit(3), now=None)
                break
            except StorageError:
                assert time.monotonic() < end, "the store never served again after the fail-over"
                await asyncio.sleep(0.1)
        admitted = [
            (await store.reserve(f"s{i}", limit(3), ttl=60, now=None)).admitted for i in range(3)
        ]
        assert admitted == [True, False, False]  # 2 before, 1 after: the limit of 3 exactly
    finally:
        await close(store)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "redis+sentinel://h1:1,h2/m",
            "Sentinel 'h2' in 'redis+sentinel://h1:1,h2/m' is not host:port",
        ),
        ("redis+sentinel://h1:1", "'redis+sentinel://h1:1' names no master after the sentinels"),
        ("redis+sentinel://h1:1/m/2", "'redis+sentinel://h1:1/m/2' names no master"),
        (
            "redis+sentinel://h1:1/m?dbx=2",
            "'redis+sentinel://h1:1/m?dbx=2' has unknown parameter 'dbx'",
        ),
        (
            "redis+sentinel://h1:1/m?db=x",
            "db='x' in 'redis+sentinel://h1:1/m?db=x' is not a database",
        ),
    ],
)
def test_bad_sentinel_uris_say_what_is_wrong(uri: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(uri)
    assert str(caught.value).startswith(message)


async def test_the_uri_carries_password_tls_and_db() -> None:
    client = open_store(
        "rediss+sentinel://u:p%40ss@10.0.0.1:26379,10.0.0.2:26380/main?db=3&sentinel_password=sp"
    )
    assert isinstance(client, RedisStore)
    master = client.client
    assert isinstance(master, SentinelMaster)
    pool = master.connection_pool
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)  # waits, like redis://'s
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "u", "p@ss")
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    assert kwargs["retry"].get_retries() == 0
    manager = pool.sentinel_manager  # type: ignore[attr-defined]
    sentinel_kwargs = [s.connection_pool.connection_kwargs for s in manager.sentinels]
    assert [(k["host"], k["port"]) for k in sentinel_kwargs] == [
        ("10.0.0.1", 26379),
        ("10.0.0.2", 26380),
    ]
    assert sentinel_kwargs[0]["password"] == "sp"
    assert manager.sentinels[0].connection_pool.connection_class.__name__ == "SSLConnection"
    assert pool.service_name == "main"  # type: ignore[attr-defined]
    await close(client)
