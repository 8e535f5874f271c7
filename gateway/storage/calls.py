"""Calls into Redis: how many run at once, how long one waits for its turn, and what a
failure means.

Busy is not down. Under a burst, waiting for a free connection is back-pressure: a call
waits its turn (at most ``wait`` seconds, behind at most ``queue`` others) and is otherwise
shed with ``StorageBusy`` (503, retry shortly), which never opens the outage breaker and
never falls back to per-replica counting. Only a store that refuses or drops connections,
or stops answering in time, is an outage (``StorageError.kind``).

redis-py's own pool would raise "No connection available" for both, and its cluster
client "Too many connections", so the gate is ours: the pool behind it is sized above it
and never runs dry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from redis.exceptions import (
    BusyLoadingError,
    MaxConnectionsError,
    RedisClusterException,
    RedisError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from gateway.errors import StorageBusy, StorageError

BUSY = "The rate-limit store is busy; retry in 1 s."
# What a Redis call raises when the store fails, for calls made around ``CallLimit.run``
# (which takes anything a call raises as that): redis-py's cluster client raises
# RedisClusterException, not a RedisError, when no node answers.
FAILURES = (RedisError, RedisClusterException, OSError)
T = TypeVar("T")


class CallLimit:
    """At most ``concurrency`` calls at once; up to ``queue`` more wait, each ``wait`` s."""

    def __init__(
        self,
        concurrency: int = 64,
        queue: int = 2048,
        wait: float = 1.0,
        on_broken: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self.wait = wait
        # Called when a connection was refused or broke: the pool's idle connections were
        # made to the same server and are likely dead too (a Redis restarted). Dropping them
        # then means the first call after a restart gets a fresh one, not a stale one.
        self.on_broken = on_broken
        self._turns = asyncio.Semaphore(concurrency)
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self._turns.locked() and self._waiting >= self.queue:
            raise StorageBusy(BUSY, retry_after=1.0)
        self._waiting += 1
        try:
            async with asyncio.timeout(self.wait):
                await self._turns.acquire()
        except TimeoutError:
            raise StorageBusy(BUSY, retry_after=1.0) from None
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._turns.release()

    async def run(self, call: Callable[[], Awaitable[T]], doing: str, *, urgent: bool = False) -> T:
        """``call()`` in its turn, with redis-py's failures translated (``translate``).
        Every store on one client runs its calls here, so none can drain the pool.
        ``urgent`` calls (a replica's heartbeat and extensions, a few a minute) take no
        turn: shed under a burst, a live replica would look dead to the others and lose its
        running exchanges' slots. The pool keeps room beyond the turns for them."""
        async with contextlib.nullcontext() if urgent else self.turn():
            try:
                return await call()
            except Exception as exc:
                # Not only RedisError: redis-py's cluster client raises RedisClusterException
                # (no node answers for the slot map) and, in a fail-over under load, an
                # AttributeError when one task's error handling disconnects a connection
                # another task is handshaking on. ``call`` is a bare redis-py call, so
                # whatever it raises is the store failing: a 500 to the client, or a dead
                # upkeep task, would be the wrong answer to it.
                error = translate(exc, doing)
                if error.kind == "down" and self.on_broken is not None:
                    with contextlib.suppress(*FAILURES):
                        await self.on_broken()
                raise error from exc


def translate(exc: BaseException, doing: str) -> StorageError:
    """A redis-py (or socket) failure as the gateway's error: refused or broken connections
    are ``down``; no answer in time is ``timeout``; a full cluster-node pool is busy. Any
    failure after the command may have been written is ``maybe_applied``."""
    if isinstance(exc, MaxConnectionsError):
        return StorageBusy(BUSY, retry_after=1.0)
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return StorageError(
            f"Redis did not answer {doing} in time.", kind="timeout", maybe_applied=True
        )
    if isinstance(exc, RedisConnectionError | OSError):
        never_sent = _refused(exc)
        return StorageError(
            f"Redis could not be reached for {doing}: {exc or type(exc).__name__}.",
            kind="down",
            maybe_applied=not never_sent,
        )
    if isinstance(exc, BusyLoadingError):
        return StorageError(f"Redis is loading its data set: {exc}.", kind="down")
    if isinstance(exc, RedisError):
        return StorageError(
            f"Redis failed {doing}: {exc or type(exc).__name__}.", kind="down", maybe_applied=True
        )
    return StorageError(
        f"Redis failed {doing}: {type(exc).__name__}: {str(exc).rstrip('.')}.",
        kind="down",
        maybe_applied=True,
    )


def _refused(exc: BaseException) -> bool:
    """True when the connection was never made, so the command cannot have run."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        if "Error 111" in str(seen) or "Connection refused" in str(seen):
            return True
        if "connecting to" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
