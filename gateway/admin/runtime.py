"""Live operations for one running gateway: overrides, audit, hot reload, last-seen orgs,
and what the dashboard shows of this replica alone (today's top spenders, refusals per minute).

The proxy app's lifespan starts them with ``start_operations`` (before the engine, which
reads the overrides) and closes them with ``Operations.aclose``; the admin routes use them
through ``app.state.ops``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from gateway.admin.refusals import RefusalHistory
from gateway.admin.spenders import Spenders
from gateway.admission import Admission
from gateway.audit import Audit
from gateway.budget.holder import PolicyHolder
from gateway.metering import UsageRecord
from gateway.metrics import Metrics
from gateway.overrides import LiveOverrides
from gateway.policy.reload import PolicyReloader, ReloadResult
from gateway.settings import Settings
from gateway.storage.live_redis import LiveStore, open_live_store

log = logging.getLogger("gateway.admin")

# Set while the admin API reloads, so the reloader's callback leaves the audit to the route
# (which knows who asked) and audits only reloads the files or SIGHUP triggered.
_api_reload: ContextVar[bool] = ContextVar("api_reload", default=False)


class SeenOrganizations:
    """The organization each account was last seen with, by this replica (bounded LRU)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, str] = OrderedDict()

    def get(self, account: str) -> str | None:
        return self._seen.get(account)

    async def record(self, record: UsageRecord, admission: Admission | None) -> None:
        """A usage hook."""
        subject = admission.caller.subject if admission is not None else None
        if subject is None or subject.organization is None:
            return
        self._seen[subject.account] = subject.organization
        self._seen.move_to_end(subject.account)
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)


@dataclass
class Operations:
    holder: PolicyHolder
    metrics: Metrics
    store: LiveStore
    overrides: LiveOverrides
    audit: Audit
    reloader: PolicyReloader | None = None
    seen: SeenOrganizations = field(default_factory=SeenOrganizations)
    spenders: Spenders = field(default_factory=Spenders)
    refusals: RefusalHistory = field(default_factory=RefusalHistory)
    started_at: float = field(default_factory=time.time)
    clock: Callable[[], float] = time.time
    _tasks: set[asyncio.Task[object]] = field(default_factory=set)
    _version: str = ""

    async def reload(self, actor: str) -> tuple[str, ReloadResult]:
        """Reload now on behalf of ``actor``; returns (the version before, the result)."""
        if self.reloader is None:
            raise RuntimeError("no policy path to reload from")
        before = self.holder.current.version
        token = _api_reload.set(True)
        try:
            result = await self.reloader.areload()
        finally:
            _api_reload.reset(token)
        await self._audit_reload(actor, before, result)
        return before, result

    def on_reload(self, outcome: str) -> None:
        """PolicyReloader's ``on_result``: count it; audit it unless the API asked."""
        self.metrics.reloaded(outcome, self.holder.current.version)
        before, self._version = self._version, self.holder.current.version
        if self.reloader is None or _api_reload.get() or outcome == "unchanged":
            return
        task = asyncio.create_task(self._audit_reload("files", before, self.reloader.last_result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _audit_reload(self, actor: str, before: str, result: ReloadResult) -> None:
        after = {"version": result.version, "outcome": result.outcome}
        if result.problems:
            after["problems"] = "\n".join(result.problems)
        target = str(self.reloader.path) if self.reloader is not None else ""
        await self.audit.record(actor, "policies.reload", target, before=before, after=after)

    async def aclose(self) -> None:
        if self.reloader is not None:
            await self.reloader.stop()
        await self.overrides.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.aclose()


async def start_operations(
    settings: Settings,
    holder: PolicyHolder,
    metrics: Metrics,
    *,
    reload_path: str | None,
    clock: Callable[[], float] | None = None,
) -> Operations:
    """Open the live store, load the overrides, start the reloader (and SIGHUP)."""
    store = open_live_store(settings.storage, socket_timeout=settings.storage_timeout)
    now = clock or time.time
    overrides = LiveOverrides(
        store,
        clock=now,
        on_change=metrics.active_overrides.set,
        on_storage_error=lambda exc: metrics.storage_failed("overrides", exc),
    )
    ops = Operations(
        holder,
        metrics,
        store,
        overrides,
        Audit(store, clock=now, replica=settings.replica_name),
        spenders=Spenders(clock=now),
        refusals=RefusalHistory(clock=now),
        clock=now,
    )
    ops._version = holder.current.version
    await overrides.start()
    if reload_path is not None:
        ops.reloader = PolicyReloader(
            reload_path, lambda: holder.current, holder.swap, on_result=ops.on_reload
        )
        await ops.reloader.__aenter__()
        # Signal handlers belong to the main thread's loop; elsewhere (a test's thread, a
        # loop without signal support) reloads still come from the files and the API.
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                ops.reloader.install_sighup(asyncio.get_running_loop())
    return ops
