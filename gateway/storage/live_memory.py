"""Live operations state in this process (``memory://``): one replica, so no channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque

from gateway.audit import MAX_ENTRIES


class MemoryLiveStore:
    """``OverrideStore`` and ``AuditStore`` in memory; the same contract as Redis."""

    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        self._overrides: dict[str, str] = {}
        self._version = 0
        self._notice = asyncio.Event()
        self._audit: deque[tuple[str, str]] = deque(maxlen=max_entries)
        self._audit_seq = 0

    async def put_override(self, field: str, document: str | None, *, now: float) -> str | None:
        old = self._overrides.pop(field, None)
        if document is not None:
            self._overrides[field] = document
        for name, stored in list(self._overrides.items()):
            expires = _expires_at(stored)
            if expires is not None and expires <= now:
                del self._overrides[name]
        self._version += 1
        # Wake every waiter once; later waiters wait on a fresh event.
        self._notice.set()
        self._notice = asyncio.Event()
        return old

    async def load_overrides(self) -> tuple[int, list[str]]:
        return self._version, list(self._overrides.values())

    async def overrides_version(self) -> int:
        return self._version

    async def wait_for_notice(self, seconds: float) -> bool:
        notice = self._notice
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await notice.wait()
                return True
        return False

    async def append_audit(self, document: str) -> str:
        self._audit_seq += 1
        entry_id = f"{self._audit_seq}-0"
        self._audit.append((entry_id, document))
        return entry_id

    async def read_audit(self, limit: int) -> list[tuple[str, str]]:
        return list(reversed(self._audit))[:limit]

    async def aclose(self) -> None:
        return None


def _expires_at(document: str) -> float | None:
    try:
        value = json.loads(document).get("expires_at")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None
