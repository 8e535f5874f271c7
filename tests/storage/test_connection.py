from __future__ import annotations

import pytest
import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from gateway.errors import ConfigError
from gateway.storage.budget_memory import MemoryStore
from gateway.storage.budget_redis import RedisStore
from gateway.storage.connection import close, open_redis, open_store


async def test_memory_uri() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    await close(store)


async def test_redis_uri_uses_a_blocking_pool_with_short_timeouts() -> None:
    store = open_store("redis://127.0.0.1:6399/3", socket_timeout=0.25, max_connections=7)
    assert isinstance(store, RedisStore)
    assert isinstance(store.client, redis.asyncio.Redis)
    pool = store.client.connection_pool
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
    assert pool.max_connections == 7 + 32  # room beyond the budget calls' own limit
    assert pool.connection_kwargs["retry"].get_retries() == 0  # no script ever runs twice
    assert pool.connection_kwargs["socket_timeout"] == 0.25
    assert pool.connection_kwargs["db"] == 3
    await close(store)


async def test_rediss_uri_uses_tls() -> None:
    client = open_redis("rediss://127.0.0.1:6399/0")
    assert isinstance(client, redis.asyncio.Redis)
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    await client.aclose()


async def test_cluster_uri_lists_startup_nodes() -> None:
    client = open_redis("redis+cluster://10.0.0.1:7000,10.0.0.2:7001")
    assert isinstance(client, RedisCluster)
    assert [(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()] == [
        ("10.0.0.1", 7000),
        ("10.0.0.2", 7001),
    ]
    await client.aclose()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("postgres://x", "Store URI 'postgres://x' is not one of: memory://, redis://host:port/db"),
        ("redis+cluster://a,b:1", "Redis Cluster node 'a' in 'redis+cluster://a,b:1' is not"),
    ],
)
def test_bad_uris_say_what_is_wrong(uri: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(uri)
    assert str(caught.value).startswith(message)


def test_braces_in_prefix_are_refused() -> None:
    with pytest.raises(ConfigError, match="must be braceless"):
        open_store("redis://127.0.0.1:6399/0", prefix="a{b}")
