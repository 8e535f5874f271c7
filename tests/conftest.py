"""Shared fixtures. Redis is found the way docs/testing.md says; a Redis test never skips."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio

from tests.rediscluster import INSTALL, LocalCluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        ok = bool(client.ping())
        client.close()
        return ok
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL if set; else a private redis-server on a free port; else 127.0.0.1:6379."""
    if url := os.environ.get("REDIS_URL"):
        if not _answers(url):
            pytest.exit(
                f"REDIS_URL={url} does not answer PING; start that Redis or unset REDIS_URL."
            )
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is not None:
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="gateway-test-redis-")
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not _answers(url):
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.exit(
                    f"redis-server on port {port} did not start; run it by hand to see why."
                )
            time.sleep(0.05)
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            shutil.rmtree(workdir, ignore_errors=True)
        return
    url = "redis://127.0.0.1:6379/0"
    if _answers(url):
        yield url
        return
    pytest.exit(
        "These tests need Redis: install it (Debian: apt-get install redis-server; macOS: "
        "brew install redis) or set REDIS_URL to a server they may flush."
    )


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client on a flushed database: every test starts from empty counters."""
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


def _local_cluster(replicas: int) -> Iterator[LocalCluster]:
    """A Redis Cluster for the session; without redis-server the test fails (never skips)."""
    try:
        cluster = LocalCluster.start(masters=3, replicas=replicas)
    except FileNotFoundError:
        pytest.fail(INSTALL, pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_nodes() -> Iterator[LocalCluster]:
    """Three masters (no replicas) on free ports below 55536; ``cluster_state:ok`` on all."""
    yield from _local_cluster(replicas=0)


@pytest.fixture(scope="session")
def redis_cluster(redis_cluster_nodes: LocalCluster) -> str:
    """The ``redis+cluster://127.0.0.1:p1,…`` URI of the session's three-master cluster."""
    return redis_cluster_nodes.uri


@pytest.fixture
def flushed_redis_cluster(redis_cluster_nodes: LocalCluster) -> str:
    """The cluster's URI after FLUSHALL on every master: a test that needs empty counters."""
    redis_cluster_nodes.flushall()
    return redis_cluster_nodes.uri


@pytest.fixture(scope="session")
def redis_cluster_with_replicas() -> Iterator[LocalCluster]:
    """Three masters with one replica each, for fail-over tests: ``kill`` a master, then
    ``wait_ok`` until its replica has taken over; ``restart`` brings it back as a replica."""
    yield from _local_cluster(replicas=1)
