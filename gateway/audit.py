"""The audit trail: every change made through the admin API or a policy reload.

Each entry says when, who (the admin token's name, or ``files`` for a reload the files
triggered), what (an action on a target), the state before and after, the reason, and which
replica made the change (``--replica-name``, else host/pid). It
goes to the ``gateway.audit`` log first, then to storage: a capped Redis stream shared by
every replica (``memory://``: a capped list in this process). A storage failure does not
undo a change already made; the log line keeps the record.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from gateway.errors import StorageError

log = logging.getLogger("gateway.audit")

MAX_ENTRIES = 10_000  # storage keeps about this many; older entries are trimmed


@dataclass(frozen=True, slots=True)
class AuditEntry:
    time: float
    actor: str
    action: str  # override.set, override.clear, cluster.link, cluster.unlink, policies.reload
    target: str
    before: Any
    after: Any
    reason: str = ""
    replica: str = ""  # empty in entries stored before replicas were recorded
    id: str = ""  # the storage's id (a stream id); empty until stored

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class AuditStore(Protocol):
    """Where entries are kept (``gateway.storage.live_*``); raises ``StorageError``."""

    async def append_audit(self, document: str) -> str:
        """Store one entry; returns its id."""
        ...

    async def read_audit(self, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` (id, document) pairs, newest first."""
        ...


def default_replica() -> str:
    """host/pid: the pod and the worker process, where the replica was not given a name."""
    return f"{socket.gethostname()}/{os.getpid()}"


class Audit:
    def __init__(
        self,
        store: AuditStore,
        *,
        clock: Callable[[], float] = time.time,
        replica: str | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self.replica = replica or default_replica()

    async def record(
        self, actor: str, action: str, target: str, *, before: Any, after: Any, reason: str = ""
    ) -> AuditEntry:
        entry = AuditEntry(
            self._clock(), actor, action, target, before, after, reason, self.replica
        )
        document = json.dumps(entry.to_json(), separators=(",", ":"), default=str)
        log.info("%s %s by %s: %s", action, target, actor, document, extra={"audit": True})
        try:
            entry_id = await self.store.append_audit(document)
        except StorageError as exc:
            log.error("audit entry not stored (kept in this log only): %s", exc)
            return entry
        return AuditEntry(**{**entry.to_json(), "id": entry_id})

    async def latest(self, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first."""
        entries = []
        for entry_id, document in await self.store.read_audit(limit):
            try:
                data = json.loads(document)
                entries.append(AuditEntry(**{**data, "id": entry_id}))
            except (ValueError, TypeError):
                log.warning("skipping an unreadable audit entry %s", entry_id)
        return entries
