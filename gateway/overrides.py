"""Live overrides: limits for one scope id, set at run time, agreed by every replica.

An override names a scope (account, organization, cluster), a scope id and limits on some
metrics. For that id it replaces every limit on those metrics in every policy of that
scope, as if written under the policy's ``overrides:`` (on top of any the file has); other
metrics keep the policy's limits. It may expire (``expires_at``); an expired one is ignored
at read time everywhere, whether or not storage has removed it yet.

Each replica keeps a snapshot, so the request path reads memory only. The snapshot follows
the store: a published notice refreshes it at once, and a version counter read every
``interval`` seconds catches a notice that was missed (a reconnect, a slow subscriber).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import StorageError
from gateway.policy.amounts import parse_limit
from gateway.policy.model import Limit, Metric, Scope

log = logging.getLogger("gateway.overrides")

INTERVAL = 0.5  # seconds between version checks: a missed notice costs at most this


@dataclass(frozen=True, slots=True)
class Override:
    scope: Scope
    scope_id: str
    limits: tuple[Limit, ...]
    reason: str = ""
    set_by: str = ""
    set_at: float = 0.0
    expires_at: float | None = None  # epoch seconds; None: until cleared

    @property
    def field(self) -> str:
        """The override's name in storage: one per scope and scope id."""
        return override_field(self.scope, self.scope_id)

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def to_json(self) -> dict[str, Any]:
        limits: dict[str, list[str]] = {}
        for limit in self.limits:
            limits.setdefault(limit.metric.value, []).append(limit.text)
        return {
            "scope": self.scope.value,
            "id": self.scope_id,
            "limits": limits,
            "reason": self.reason,
            "set_by": self.set_by,
            "set_at": self.set_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Override:
        """The inverse of ``to_json``; raises ValueError for a document it cannot read."""
        try:
            return cls(
                scope=Scope(data["scope"]),
                scope_id=str(data["id"]),
                limits=parse_limits(data["limits"]),
                reason=str(data.get("reason", "")),
                set_by=str(data.get("set_by", "")),
                set_at=float(data.get("set_at", 0.0)),
                expires_at=None if data.get("expires_at") is None else float(data["expires_at"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an override document: {exc}") from exc


def override_field(scope: Scope, scope_id: str) -> str:
    return json.dumps([scope.value, scope_id])


def parse_limits(raw: object) -> tuple[Limit, ...]:
    """``{"tokens": "5M/day", "requests": ["10/second", "100/minute"]}`` → limits.

    ValueError names the metric and shows the limit grammar."""
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(
            'limits must be an object of metric to limit, e.g. {"tokens": "5M/day"}, '
            "naming at least one metric"
        )
    limits: list[Limit] = []
    for name, value in raw.items():
        try:
            metric = Metric(name)
        except ValueError:
            known = ", ".join(m.value for m in Metric)
            raise ValueError(f"{name!r} is not a metric; metrics are {known}") from None
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError(f"limits.{name} is an empty list; give at least one limit")
        if metric is Metric.CONCURRENT and len(values) > 1:
            raise ValueError("limits.concurrent takes one count, not a list")
        for item in values:
            try:
                limits.append(parse_limit(metric, item))
            except ValueError as exc:
                raise ValueError(f"limits.{name}: {exc}") from None
    return tuple(limits)


class OverrideStore(Protocol):
    """Where overrides live (``gateway.storage.live_*``); raises ``StorageError``."""

    async def put_override(self, field: str, document: str | None, *, now: float) -> str | None:
        """Set (or, with None, delete) one override; returns the document it replaced. Bumps
        the version, tells every subscriber, and drops overrides expired before ``now``."""
        ...

    async def load_overrides(self) -> tuple[int, list[str]]:
        """The version and every stored document, read at once."""
        ...

    async def overrides_version(self) -> int: ...

    async def wait_for_notice(self, seconds: float) -> bool:
        """Whether a change was announced within ``seconds``."""
        ...


class LiveOverrides:
    """This replica's snapshot of the overrides, and the way to change them.

    ``limits`` is the ``BudgetEngine``'s lookup; ``set`` and ``clear`` write through the store
    and refresh the snapshot before they return, so this replica agrees at once.
    """

    def __init__(
        self,
        store: OverrideStore,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[int], None] | None = None,
        on_storage_error: Callable[[StorageError], None] | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.version = -1  # nothing loaded yet
        self._clock = clock
        self._on_change = on_change
        # Each failed read, counted (the log says so only once a minute).
        self._on_storage_error = on_storage_error
        self._by_key: dict[tuple[Scope, str], Override] = {}
        self._task: asyncio.Task[None] | None = None

    def limits(self, scope: Scope, scope_id: str) -> tuple[Limit, ...] | None:
        found = self._by_key.get((scope, scope_id))
        if found is None or not found.active(self._clock()):
            return None
        return found.limits

    def get(self, scope: Scope, scope_id: str) -> Override | None:
        found = self._by_key.get((scope, scope_id))
        return found if found is not None and found.active(self._clock()) else None

    def active(self) -> list[Override]:
        now = self._clock()
        found = [o for o in self._by_key.values() if o.active(now)]
        return sorted(found, key=lambda o: (o.scope.value, o.scope_id))

    async def set(
        self,
        scope: Scope,
        scope_id: str,
        limits: Sequence[Limit],
        *,
        ttl_seconds: float | None = None,
        reason: str = "",
        set_by: str = "",
    ) -> tuple[Override | None, Override]:
        """Store an override; returns (the active one it replaced, the new one)."""
        if ttl_seconds is not None and not (ttl_seconds > 0 and math.isfinite(ttl_seconds)):
            raise ValueError(f"ttl_seconds must be a positive number, not {ttl_seconds!r}")
        now = self._clock()
        expires = None if ttl_seconds is None else now + ttl_seconds
        new = Override(scope, scope_id, tuple(limits), reason, set_by, now, expires)
        old = await self.store.put_override(new.field, json.dumps(new.to_json()), now=now)
        await self.refresh()
        return self._active_document(old, now), new

    async def clear(self, scope: Scope, scope_id: str) -> Override | None:
        """Remove an override; returns the one removed if it was still active."""
        now = self._clock()
        old = await self.store.put_override(override_field(scope, scope_id), None, now=now)
        await self.refresh()
        return self._active_document(old, now)

    async def refresh(self) -> None:
        version, documents = await self.store.load_overrides()
        by_key: dict[tuple[Scope, str], Override] = {}
        for document in documents:
            found = _read(document)
            if found is not None:
                by_key[(found.scope, found.scope_id)] = found
        changed = version != self.version
        self._by_key, self.version = by_key, version
        if changed and self._on_change is not None:
            self._on_change(len(self.active()))

    async def run(self) -> None:
        """Follow the store until cancelled; storage failures keep the last snapshot, and
        say so once a minute, not on every retry."""
        failing_since: float | None = None
        logged_at = -math.inf
        while True:
            try:
                await self.refresh()
                while True:
                    if await self.store.wait_for_notice(self.interval):
                        await self.refresh()
                    elif await self.store.overrides_version() != self.version:
                        log.info("override notice missed; refreshing from the version counter")
                        await self.refresh()
                    # Said once the whole cycle works, notices included: on a cluster whose
                    # channel's node is down the snapshot reads while the wait fails, and
                    # saying it after the read alone said it every retry.
                    if failing_since is not None:
                        since = time.monotonic() - failing_since
                        log.warning("overrides readable again after %.0f s", since)
                        failing_since = None
            except StorageError as exc:
                if self._on_storage_error is not None:
                    self._on_storage_error(exc)
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - logged_at >= 60.0:
                    log.warning("overrides could not be read, keeping the last snapshot: %s", exc)
                    logged_at = now
                await asyncio.sleep(self.interval)
            except Exception:  # a bug here must not stop every later override from arriving
                log.exception("following the overrides failed; retrying")
                await asyncio.sleep(self.interval)

    async def start(self) -> None:
        """Load the snapshot (a storage failure starts empty and retries) and follow it."""
        try:
            await self.refresh()
        except StorageError as exc:
            if self._on_storage_error is not None:
                self._on_storage_error(exc)
        self._task = asyncio.create_task(self.run(), name="live-overrides")

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _active_document(self, document: str | None, now: float) -> Override | None:
        found = _read(document) if document is not None else None
        return found if found is not None and found.active(now) else None


def _read(document: str) -> Override | None:
    try:
        return Override.from_json(json.loads(document))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        log.warning("ignoring an unreadable override %r: %s", document[:200], exc)
        return None
