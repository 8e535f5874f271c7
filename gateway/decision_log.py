"""The decision log: one JSON line per finished metered exchange, for audit and replay.

What a line holds is what ``gateway replay`` needs to run the exchange again through the
engine: when, who (account, organization, attributes, hashed linking signals), what was
reserved and what was really used, and what was decided. Never prompt text, never keys.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from gateway.admission import Admission
from gateway.log_fields import parse_line
from gateway.metering import UsageRecord


def log_entry(record: UsageRecord, admission: Admission | None, now: float) -> dict[str, Any]:
    estimate = record.estimate
    entry: dict[str, Any] = {
        "time": round(now - record.duration_s, 3),
        "duration_s": round(record.duration_s, 3),
        "request_id": record.request_id,
        "api": record.api,
        "status": record.status,
        "outcome": record.outcome.value,
        "model": estimate.model if estimate else None,
        "reserved": {
            "input_tokens": estimate.input_tokens if estimate else 0,
            "output_tokens": estimate.max_output_tokens if estimate else 0,
            "requests": estimate.requests if estimate else 0,
        },
        "usage": {
            "input_tokens": record.usage.input_tokens,
            "output_tokens": record.usage.output_tokens,
            "cache_creation_input_tokens": record.usage.cache_creation_input_tokens,
            "cache_read_input_tokens": record.usage.cache_read_input_tokens,
            "reported": record.usage_reported,
        },
    }
    if admission is None:
        entry.update(decision="unauthenticated" if record.status == 401 else "not_admitted")
        return entry
    subject = admission.caller.subject
    decision = admission.decision
    refusal = decision.refusal
    entry.update(
        account=subject.account,
        organization=subject.organization,
        cluster=subject.cluster,
        attributes={k: v for k, v in subject.attributes.items() if k != "model"},
        signals=[list(pair) for pair in admission.caller.signals],
        decision="admitted" if decision.admitted else "refused",
        policy=refusal.policy if refusal else None,
        scope=refusal.scope.value if refusal else None,
        limit=refusal.limit.text if refusal else None,
        shadow_refusals=[
            {"policy": r.policy, "scope": r.scope.value, "limit": r.limit.text}
            for r in decision.shadow_refusals
        ],
        degraded=decision.degraded,
        delayed_s=round(admission.delayed_s, 3),  # held by an action: slow policy first
    )
    return entry


class DecisionLog:
    """A usage hook appending to a file; writes go through a thread so the loop never blocks."""

    def __init__(self, path: str | Path) -> None:
        # Held open for the process's life: closed by close() at shutdown.
        self._file: IO[str] = Path(path).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._lock = asyncio.Lock()

    async def __call__(self, record: UsageRecord, admission: Admission | None) -> None:
        line = json.dumps(log_entry(record, admission, time.time()), separators=(",", ":"))
        async with self._lock:
            await asyncio.to_thread(self._file.write, line + "\n")

    def close(self) -> None:
        self._file.close()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_log(path))


def iter_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """The log's lines one at a time, read as they are needed: a replay's memory holds
    what is in flight, never the whole file."""
    with Path(path).open("rb") as handle:  # a line that is not UTF-8: skipped, as damaged
        for line in handle:
            if line.strip():
                yield parse_line(line)
