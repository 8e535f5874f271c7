"""The Redis counter store: one Lua call per reserve, one per settle, across every scope.

Every key lives under ONE hash tag (``gw:{b}:…``) so the multi-scope script runs on
Redis Cluster: all budgets sit on one shard. That is correctness over sharding — an
all-or-nothing debit across an account, its organization and its cluster cannot span
shards without compensation. A call over three scopes (nine counters) measured 150 to 220 µs
of Redis time on a busy 2-core machine (docs/budget.md), so one shard carries several
thousand admissions a second: more than the Python processes in front of it can send.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any
from urllib.parse import quote

import redis.asyncio
import redis.asyncio.cluster
from redis.exceptions import RedisError

from gateway.budget.store import Bucket, BucketState, Reservation, Upkeep
from gateway.errors import ConfigError, StorageError
from gateway.storage.calls import CallLimit
from gateway.storage.registry import REGISTRY_LIFE, registered_cluster

Client = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

GRACE = 3600.0  # seconds records and counters outlive their use, so a late settle finds them
SWEEP_LIMIT = 16  # expired reservations one reserve releases: bounds the script's work
UPKEEP_SWEEP_LIMIT = 1000  # expired reservations one upkeep tick releases
# A released reserve's tombstone outlives any call that could still be on its way to Redis.
TOMBSTONE_LIFE = 600.0


def lua(*names: str) -> str:
    """Scripts are assembled from files so helpers are written once."""
    folder = files("gateway.storage").joinpath("lua")
    return "\n".join(folder.joinpath(f"{name}.lua").read_text(encoding="utf-8") for name in names)


def _float(value: bytes) -> float | None:
    return float(value) if value else None


def _states(reply: Sequence[Any]) -> tuple[BucketState, ...]:
    return tuple(
        BucketState(
            fits=bool(reply[i]),
            remaining=int(reply[i + 1]),
            retry_after=_float(reply[i + 2]),
            reset_seconds=float(reply[i + 3]),
        )
        for i in range(0, len(reply), 4)
    )


def _now(now: float | None) -> str:
    return "" if now is None else repr(now)


def member(owner: str, request_id: str) -> str:
    """A reservation's name in the pending set: its replica, then the request id (quoted,
    so the first '/' always ends the replica's part)."""
    return f"{owner}/{quote(request_id, safe='')}"


class RedisStore:
    """``CounterStore`` on redis-py asyncio (a ``Redis`` or a ``RedisCluster``)."""

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "gw",
        hash_tag: str = "b",
        grace: float = GRACE,
        sweep_limit: int = SWEEP_LIMIT,
        limit: CallLimit | None = None,
    ) -> None:
        if any(c in prefix + hash_tag for c in "{}") or not hash_tag:
            raise ConfigError(
                f"Redis key prefix {prefix!r} and hash tag {hash_tag!r} must be braceless, "
                "and the hash tag not empty."
            )
        self.client = client
        self._base = f"{prefix}:{{{hash_tag}}}:"
        self._grace = grace
        self._sweep_limit = sweep_limit
        self._limit = limit if limit is not None else CallLimit()
        self._reserve = client.register_script(lua("time", "bucket", "adjust", "reserve"))
        self._settle = client.register_script(lua("time", "bucket", "adjust", "settle"))
        self._peek = client.register_script(lua("time", "bucket", "peek"))
        self._extend = client.register_script(lua("time", "bucket", "adjust", "extend"))
        self._release = client.register_script(lua("time", "bucket", "adjust", "release"))
        self._upkeep = client.register_script(lua("time", "bucket", "adjust", "upkeep"))
        self._debit = client.register_script(lua("time", "bucket", "debit"))

    @property
    def limit(self) -> CallLimit:
        """The turns every store sharing this client takes its calls in."""
        return self._limit

    @property
    def base(self) -> str:
        """Every key's start, ``{prefix}:{{tag}}:``: stores sharing this client share it too."""
        return self._base

    def counter_key(self, bucket: Bucket) -> str:
        return f"{self._base}c:{bucket.key}"

    def _registry(self, bucket: Bucket) -> str:
        cluster = registered_cluster(bucket)
        return "" if cluster is None else f"{self._base}k:{cluster}"

    async def reserve(
        self,
        request_id: str,
        buckets: Sequence[Bucket],
        *,
        ttl: float,
        now: float | None,
        owner: str = "",
        force: bool = False,
    ) -> Reservation:
        name = member(owner, request_id)
        keys = [self._base + "pending", f"{self._base}r:{name}"]
        keys += [self.counter_key(b) for b in buckets]
        args: list[str | int | float] = [
            _now(now),
            repr(ttl),
            repr(self._grace),
            name,
            self._base + "r:",
            self._sweep_limit,
            repr(REGISTRY_LIFE + ttl + self._grace),
            "1" if force else "",
        ]
        for b in buckets:
            args += [b.metric, b.window, b.seconds, b.amount, b.cost, b.group, b.expire_cost]
            args.append(self._registry(b))
        reply = await self._call(self._reserve, keys, args, "a reserve")
        if reply[0] == 2:
            return Reservation(admitted=True, states=(), repeated=True)
        if reply[0] == 3:
            raise StorageError("This reservation was released while its answer was lost.")
        return Reservation(admitted=bool(reply[0]), states=_states(reply[1:]))

    async def settle(
        self, request_id: str, actual: Mapping[str, int], *, now: float | None, owner: str = ""
    ) -> bool:
        name = member(owner, request_id)
        keys = [self._base + "pending", f"{self._base}r:{name}"]
        args: list[str | int | float] = [_now(now), repr(self._grace), name]
        for metric, cost in actual.items():
            args += [metric, cost]
        return bool(await self._call(self._settle, keys, args, "a settle"))

    async def extend(
        self, request_ids: Sequence[str], *, ttl: float, now: float | None, owner: str = ""
    ) -> int:
        if not request_ids:
            return 0
        args: list[str | int | float] = [_now(now), repr(ttl), repr(self._grace)]
        args.append(self._base + "r:")
        args += [member(owner, request_id) for request_id in request_ids]
        pending = [self._base + "pending"]
        return int(await self._call(self._extend, pending, args, "an extend", urgent=True))

    async def release(
        self, request_id: str, *, ttl: float, now: float | None, owner: str = ""
    ) -> bool:
        name = member(owner, request_id)
        keys = [self._base + "pending", f"{self._base}r:{name}"]
        life = max(TOMBSTONE_LIFE, ttl + self._grace)
        args: list[str | int | float] = [_now(now), repr(self._grace), name, repr(life)]
        return bool(await self._call(self._release, keys, args, "a release"))

    async def upkeep(self, owner: str, *, dead_after: float, now: float | None) -> Upkeep:
        keys = [self._base + "replicas", self._base + "pending"]
        args: list[str | int | float] = [
            _now(now),
            owner,
            repr(dead_after),
            UPKEEP_SWEEP_LIMIT,
            repr(self._grace),
            self._base + "r:",
            repr(self._grace),
        ]
        alive, reaped, swept = await self._call(self._upkeep, keys, args, "an upkeep", urgent=True)
        return Upkeep(replicas=int(alive), reaped=int(reaped), swept=int(swept))

    async def debit(
        self, debits: Sequence[tuple[Bucket, int]], *, now: float | None, batch: str
    ) -> None:
        kept = [(b, cost) for b, cost in debits if cost != 0 and b.window != "inflight"]
        if not kept:
            return
        args: list[str | int | float] = [_now(now), repr(self._grace)]
        for b, cost in kept:
            args += [b.window, b.seconds, b.amount, cost]
        keys = [f"{self._base}wb:{batch}"] + [self.counter_key(b) for b, _ in kept]
        await self._call(self._debit, keys, args, "a write-back")

    async def peek(self, buckets: Sequence[Bucket], *, now: float | None) -> list[BucketState]:
        if not buckets:
            return []
        args: list[str | int | float] = [_now(now)]
        for b in buckets:
            args += [b.window, b.seconds, b.amount, b.cost]
        reply = await self._call(self._peek, [self.counter_key(b) for b in buckets], args, "a peek")
        return list(_states(reply))

    async def aclose(self) -> None:
        try:
            await self.client.aclose()
        except RedisError as exc:
            raise StorageError(f"Closing the Redis client failed: {exc}") from exc

    async def _call(
        self,
        script: Any,
        keys: list[str],
        args: list[str | int | float],
        doing: str,
        *,
        urgent: bool = False,
    ) -> Any:
        # redis-py raises RedisError (and OSError from a socket it did not wrap): the
        # boundary translates both so nothing above storage knows redis exists.
        call = lambda: script(keys=keys, args=args)  # noqa: E731
        return await self._limit.run(call, doing, urgent=urgent)
