"""``redis+sentinel://`` URIs: a Redis master found through Redis Sentinel.

The form, like ``redis+cluster://``: sentinels listed as ``host:port`` pairs, the master's
name as the path, the master's own credentials before ``@``, the rest as query parameters::

    redis+sentinel://[[user]:password@]h1:p1[,h2:p2…]/master-name[?db=N&sentinel_password=…]
    rediss+sentinel://…   TLS to the master and to the sentinels alike

``user:password`` authenticate to the master (and whichever replica Sentinel promotes); a
sentinel that has a password of its own takes ``sentinel_username``/``sentinel_password``.
Every connection asks a sentinel for the master's address when it opens, so after a
fail-over new connections go to the promoted replica without a restart.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote

import redis.asyncio
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from gateway.errors import ConfigError
from gateway.storage.uri import host_ports, masked

FORM = "redis+sentinel://[[user]:password@]h1:p1,h2:p2/master-name[?db=N]"
_QUERY = ("db", "sentinel_username", "sentinel_password")


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool, waiting for a free connection like ``redis://``'s does rather than
    raising "Too many connections" under a burst."""


class SentinelMaster(redis.asyncio.Redis):
    """The master's client; closing it also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def open_sentinel(
    uri: str,
    parts: SplitResult,
    *,
    socket_timeout: float,
    max_connections: int,
    pool_timeout: float,
    retry: Any,
) -> SentinelMaster:
    """The client of the master a ``redis+sentinel://`` URI names (connecting is lazy)."""
    sentinels = host_ports(parts, uri, "Sentinel")
    shown = masked(uri)
    service = parts.path.removeprefix("/")
    if not service or "/" in service:
        raise ConfigError(f"{shown!r} names no master after the sentinels; the form is {FORM}.")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY))
    if unknown:
        raise ConfigError(
            f"{shown!r} has unknown parameter {unknown[0]!r}; known: {', '.join(_QUERY)}."
        )
    db = query.get("db", ["0"])[-1]
    if not db.isdigit():
        raise ConfigError(f"db={db!r} in {shown!r} is not a database number.")
    tls = parts.scheme == "rediss+sentinel"
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "ssl": tls,
        "username": query.get("sentinel_username", [None])[-1],
        "password": query.get("sentinel_password", [None])[-1],
    }
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    master: SentinelMaster = manager.master_for(
        unquote(service),
        redis_class=SentinelMaster,
        connection_pool_class=_BlockingSentinelPool,
        ssl=tls,
        db=int(db),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        max_connections=max_connections,
        timeout=pool_timeout,
        retry=retry,
    )
    return master
