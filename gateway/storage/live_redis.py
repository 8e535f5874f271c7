"""Live operations state on Redis: overrides (a HASH, a version counter and a channel) and
the audit trail (a capped stream). Shared by every replica of a deployment.

Keys (``prefix`` = ``gw``): ``gw:{o}:overrides`` and ``gw:{o}:overrides:version`` share a
hash tag, so the one script that changes them runs on Redis Cluster; notices go out on
``gw:overrides``; the trail is ``gw:audit``. This client is separate from the budget
store's: a subscription holds a connection of its own.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis.asyncio
import redis.asyncio.client
import redis.asyncio.cluster

from gateway.audit import MAX_ENTRIES
from gateway.errors import StorageError
from gateway.storage.budget_redis import lua
from gateway.storage.calls import FAILURES
from gateway.storage.connection import open_redis
from gateway.storage.live_memory import MemoryLiveStore

Client = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisLiveStore:
    """``OverrideStore`` and ``AuditStore`` on redis-py asyncio."""

    def __init__(self, client: Client, *, prefix: str = "gw") -> None:
        self.client = client
        self.hash_key = f"{prefix}:{{o}}:overrides"
        self.version_key = f"{prefix}:{{o}}:overrides:version"
        self.channel = f"{prefix}:overrides"
        self.audit_key = f"{prefix}:audit"
        self._put = client.register_script(lua("override_put"))
        self._pubsub: Any = None  # redis-py's PubSub, made on first wait

    async def put_override(self, field: str, document: str | None, *, now: float) -> str | None:
        keys = [self.hash_key, self.version_key]
        args = [field, document or "", repr(now), self.channel]
        try:
            old, _version = await self._put(keys=keys, args=args)
        except FAILURES as exc:
            raise StorageError(f"Redis did not store the override: {exc}") from exc
        return _text(old) if old else None

    async def load_overrides(self) -> tuple[int, list[str]]:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.get(self.version_key)
                pipe.hvals(self.hash_key)
                version, documents = await pipe.execute()
        except FAILURES as exc:
            raise StorageError(f"Redis did not answer: {exc}") from exc
        return int(version or 0), [_text(d) for d in documents]

    async def overrides_version(self) -> int:
        try:
            return int(await self.client.get(self.version_key) or 0)
        except FAILURES as exc:
            raise StorageError(f"Redis did not answer: {exc}") from exc

    async def wait_for_notice(self, seconds: float) -> bool:
        try:
            if self._pubsub is None:
                self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                await self._pubsub.subscribe(self.channel)
                return True  # a notice sent before the subscription would be lost: look now
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=seconds
            )
        except FAILURES as exc:
            await self._drop_pubsub()
            raise StorageError(f"The override channel broke: {exc}") from exc
        return message is not None

    async def append_audit(self, document: str) -> str:
        try:
            entry_id = await self.client.xadd(
                self.audit_key, {"entry": document}, maxlen=MAX_ENTRIES, approximate=True
            )
        except FAILURES as exc:
            raise StorageError(f"Redis did not store the audit entry: {exc}") from exc
        return _text(entry_id)

    async def read_audit(self, limit: int) -> list[tuple[str, str]]:
        try:
            rows: Any = await self.client.xrevrange(self.audit_key, count=limit)
        except FAILURES as exc:
            raise StorageError(f"Redis did not answer: {exc}") from exc
        found = []
        for entry_id, fields in rows:
            document = fields.get(b"entry", fields.get("entry"))
            if document is not None:
                found.append((_text(entry_id), _text(document)))
        return found

    async def aclose(self) -> None:
        await self._drop_pubsub()
        try:
            await self.client.aclose()
        except FAILURES as exc:
            raise StorageError(f"Closing the Redis client failed: {exc}") from exc

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            # A broken connection has nothing more to release.
            with contextlib.suppress(*FAILURES):
                await pubsub.aclose()


LiveStore = RedisLiveStore | MemoryLiveStore


def open_live_store(uri: str, *, prefix: str = "gw", socket_timeout: float = 0.5) -> LiveStore:
    """The live-operations store for the same URI as the counter store."""
    if uri in ("memory://", "memory:"):
        return MemoryLiveStore()
    # A few connections: one held by the subscription, the rest for admin calls and polls.
    client = open_redis(uri, socket_timeout=socket_timeout, max_connections=8)
    return RedisLiveStore(client, prefix=prefix)
