"""The shadow report: what shadow policies would have refused, by policy and scope id.

A shadow policy is counted exactly like an enforced one and never refuses (the engine's
``Decision.shadow_refusals``). ``ShadowRecorder.record`` tallies each would-be refusal in
memory, with no I/O on the request path; ``flush`` (every ``interval`` seconds while
``run`` runs, and at shutdown) adds the tallies to the bounded report in storage in one
call. ``gateway report shadow --storage URI`` prints it (``report_shadow``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from gateway.budget.decision import Decision, Refusal
from gateway.budget.shadow_store import ShadowRow, ShadowStore
from gateway.errors import StorageError
from gateway.metering import RequestEstimate
from gateway.storage.connection import close, open_shadow_store, open_store

log = logging.getLogger("gateway.shadow")

FLUSH_INTERVAL = 1.0  # seconds; how far the stored report may lag this replica


class ShadowRecorder:
    """Tallies would-be refusals per (policy, scope, scope id) and flushes them to storage.

    ``observers`` are called with each would-be refusal as it happens: the hook for a
    metric. ``clock`` (epoch seconds; default ``time.time``) stamps first and last seen.
    """

    def __init__(
        self,
        store: ShadowStore,
        *,
        clock: Callable[[], float] | None = None,
        observers: Sequence[Callable[[Refusal], None]] = (),
    ) -> None:
        self.store = store
        self.observers = list(observers)
        self._clock = clock if clock is not None else time.time
        self._pending: dict[tuple[str, str, str], ShadowRow] = {}

    def record(self, decision: Decision, estimate: RequestEstimate | None) -> None:
        """Note the decision's would-be refusals (none: nothing to do)."""
        if not decision.shadow_refusals:
            return
        now = self._clock()
        tokens = estimate.tokens if estimate is not None else 0
        for refusal in decision.shadow_refusals:
            for observer in self.observers:
                observer(refusal)
            key = (refusal.policy, refusal.scope.value, refusal.scope_id)
            known = self._pending.get(key)
            count, total, first = (
                (1, tokens, now)
                if known is None
                else (known.count + 1, known.tokens + tokens, known.first_seen)
            )
            self._pending[key] = ShadowRow(*key, count, total, first, now)

    async def flush(self) -> None:
        """Add what was tallied since the last flush to the stored report. Kept for the
        next flush if storage fails, so a short outage loses nothing."""
        rows, self._pending = list(self._pending.values()), {}
        if not rows:
            return
        try:
            await self.store.add(rows)
        except StorageError as exc:
            log.warning("The shadow report could not be saved (%s); retrying later.", exc)
            for row in rows:
                self._merge_back(row)

    async def run(self, interval: float = FLUSH_INTERVAL) -> None:
        """Flush every ``interval`` seconds until cancelled; then flush once more."""
        try:
            while True:
                await asyncio.sleep(interval)
                await self.flush()
        finally:
            await self.flush()

    def _merge_back(self, row: ShadowRow) -> None:
        key = (row.policy, row.scope, row.scope_id)
        known = self._pending.get(key)
        if known is not None:
            row = ShadowRow(
                *key,
                row.count + known.count,
                row.tokens + known.tokens,
                min(row.first_seen, known.first_seen),
                max(row.last_seen, known.last_seen),
            )
        self._pending[key] = row


async def shadow_report(store: ShadowStore) -> tuple[list[ShadowRow], int]:
    """The stored report, largest count first, and how many refusals dropped rows held."""
    return await store.rows()


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_shadow_report(rows: Sequence[ShadowRow], dropped: int = 0) -> str:
    """A plain-text table for operators."""
    if not rows:
        return "No shadow policy would have refused anything yet."
    header = ("policy", "scope", "scope id", "would refuse", "tokens", "first seen", "last seen")
    table = [header] + [
        (
            r.policy,
            r.scope,
            r.scope_id,
            f"{r.count:,}",
            f"{r.tokens:,}",
            _when(r.first_seen),
            _when(r.last_seen),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    if dropped:
        lines.append(f"(rows past the cap were dropped, holding {dropped:,} refusals)")
    return "\n".join(lines)


def rows_json(rows: Sequence[ShadowRow], dropped: int = 0) -> str:
    return json.dumps(
        {
            "rows": [
                {
                    "policy": r.policy,
                    "scope": r.scope,
                    "scope_id": r.scope_id,
                    "count": r.count,
                    "tokens": r.tokens,
                    "first_seen": _when(r.first_seen),
                    "last_seen": _when(r.last_seen),
                }
                for r in rows
            ],
            "dropped": dropped,
        },
        indent=2,
    )


async def report_shadow(storage_uri: str, json: bool) -> str:
    """What ``gateway report shadow --storage URI [--json]`` prints. Raises ``StorageError``
    when the store does not answer, ``ConfigError`` for a bad URI."""
    store = open_store(storage_uri)
    try:
        rows, dropped = await shadow_report(open_shadow_store(store))
    finally:
        await close(store)
    return rows_json(rows, dropped) if json else format_shadow_report(rows, dropped)
