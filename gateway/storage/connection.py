"""A store URI → a counter store: ``memory://``, ``redis://``, ``rediss://``, ``redis+cluster://``,
``redis+sentinel://`` (its form in ``sentinel.py``).

The cluster and shadow-report stores are opened on a counter store, not a URI: they share
its Redis client (one pool) and key base, or its memory (a merge moves its counters).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.budget.cluster_store import ClusterStore
from gateway.budget.shadow_store import ShadowStore
from gateway.budget.store import CounterStore
from gateway.errors import ConfigError
from gateway.storage.budget_memory import MemoryStore
from gateway.storage.budget_redis import RedisStore
from gateway.storage.calls import FAILURES, CallLimit
from gateway.storage.clusters_memory import MemoryClusterStore
from gateway.storage.clusters_redis import RedisClusterStore
from gateway.storage.sentinel import open_sentinel
from gateway.storage.shadow_report import MemoryShadowStore, RedisShadowStore
from gateway.storage.uri import host_ports, masked

SCHEMES = (
    "memory://",
    "redis://host:port/db",
    "rediss://host:port/db",
    "redis+cluster://h1:p1,h2:p2",
    "redis+sentinel://h1:p1,h2:p2/master-name",
)


def _no_retry() -> Retry:
    # None at all: a command that timed out, or whose connection broke once it was sent,
    # may have run, and a script run twice would debit twice. The engine compensates a
    # lost reserve instead (release.lua), and every script is idempotent per request id.
    return Retry(NoBackoff(), 0)


def open_redis(
    uri: str,
    *,
    socket_timeout: float = 0.5,
    max_connections: int = 64,
    pool_timeout: float = 1.0,
) -> redis.asyncio.Redis | RedisCluster:
    """A redis-py asyncio client for a ``redis://``, ``rediss://``, ``redis+cluster://`` or
    ``redis+sentinel://`` URI (each also with TLS: ``rediss+cluster``, ``rediss+sentinel``)."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise ConfigError(f"Store URI {masked(uri)!r} does not parse: {exc}.") from None
    if parts.scheme in ("redis+sentinel", "rediss+sentinel"):
        return open_sentinel(
            uri,
            parts,
            socket_timeout=socket_timeout,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            retry=_no_retry(),
        )
    if parts.scheme in ("redis+cluster", "rediss+cluster"):
        nodes = [ClusterNode(h, p) for h, p in host_ports(parts, uri, "Redis Cluster node")]
        # The cluster client keeps a pool per node and raises past max_connections
        # rather than waiting: size it for the proxy's concurrency.
        return RedisCluster(
            startup_nodes=nodes,
            ssl=parts.scheme == "rediss+cluster",
            username=parts.username,
            password=parts.password,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            max_connections=max_connections,
            retry=_no_retry(),
        )
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"Store URI {masked(uri)!r} is not one of: {', '.join(SCHEMES)}.")
    # The default pool raises "Too many connections" under load; a blocking one waits.
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        uri,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=_no_retry(),
    )
    return redis.asyncio.Redis.from_pool(pool)


def open_store(
    uri: str,
    *,
    prefix: str = "gw",
    hash_tag: str = "b",
    socket_timeout: float = 0.5,
    max_connections: int = 64,
    queue: int = 2048,
    wait: float = 1.0,
) -> CounterStore:
    """The counter store a URI names. Connecting is lazy: a down Redis fails on first use.

    At most ``max_connections`` budget calls run at once and ``queue`` more wait up to
    ``wait`` seconds (``calls.CallLimit``); the pool has room beyond that for the cluster,
    shadow and live-operations calls that share it, so it never runs dry under a burst.
    """
    if uri in ("memory://", "memory:"):
        return MemoryStore()
    client = open_redis(
        uri,
        socket_timeout=socket_timeout,
        max_connections=max_connections + 32,
        pool_timeout=wait,
    )
    limit = CallLimit(max_connections, queue, wait, on_broken=_idle_dropper(client))
    return RedisStore(client, prefix=prefix, hash_tag=hash_tag, limit=limit)


def _idle_dropper(
    client: redis.asyncio.Redis | RedisCluster,
) -> Callable[[], Awaitable[None]] | None:
    if isinstance(client, RedisCluster):
        return None  # the cluster client drops a failed node's idle connections itself
    pool = client.connection_pool

    async def drop() -> None:
        await pool.disconnect(inuse_connections=False)

    return drop


async def warm(store: CounterStore) -> None:
    """Learn a Redis Cluster's slots before the first request, so a first burst is not
    routed to random nodes and redirected (a MOVED storm makes redis-py drop every node's
    connections mid-flight). A store that does not answer yet is learnt later, lazily."""
    if isinstance(store, RedisStore) and isinstance(store.client, RedisCluster):
        with contextlib.suppress(*FAILURES):
            await store.client.initialize()


async def close(store: CounterStore) -> None:
    """Close a store ``open_store`` returned (its connections, for Redis)."""
    await store.aclose()


def open_cluster_store(store: CounterStore, *, founder_names: bool = False) -> ClusterStore:
    """The cluster store living beside ``store``: same Redis client and hash tag, or, for
    ``memory://``, the same process memory (a merge moves that store's counters), where
    ``founder_names`` names new clusters after their first account (a replay's)."""
    if isinstance(store, RedisStore):
        return RedisClusterStore(store.client, base=store.base, limit=store.limit)
    if isinstance(store, MemoryStore):
        return MemoryClusterStore(store, founder_names=founder_names)
    raise ConfigError(f"No cluster store goes with a {type(store).__name__}.")


def open_shadow_store(store: CounterStore) -> ShadowStore:
    """The shadow report living beside ``store`` (same Redis client, or process memory)."""
    if isinstance(store, RedisStore):
        return RedisShadowStore(store.client, base=store.base, limit=store.limit)
    if isinstance(store, MemoryStore):
        return MemoryShadowStore()
    raise ConfigError(f"No shadow report store goes with a {type(store).__name__}.")
