"""``lua/bucket.lua``'s values and arithmetic in Python, for ``MemoryStore``: a reservation's
entries and record, a bucket as it stands, calendar periods, and what a refusal reports."""

from __future__ import annotations

import math
import re
from datetime import date, timedelta
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote

from gateway.budget.store import DAY, INFLIGHT, ROLLING, Bucket

EPS = 1e-6
_EPOCH = date(1970, 1, 1)


class Entry(NamedTuple):
    """What one reservation debited in one bucket (``key`` includes the period)."""

    key: str
    metric: str
    window: str
    seconds: int
    amount: int
    cost: int
    at: float
    kept: int
    reserved: int  # the cost at reservation (``cost`` becomes ``kept`` on expiry)


def member(owner: str, request_id: str) -> str:
    """As ``budget_redis.member``: the replica, then the quoted request id."""
    quoted = request_id if _UNRESERVED(request_id) else quote(request_id, safe="")
    return f"{owner}/{quoted}"


# What ``quote`` leaves as it is: asked first, as quoting showed in replay profiles.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch


class Record(NamedTuple):
    """A reservation: pending until ``expiry`` (None once expired: kept, not pending), its
    entries, and when the record itself is dropped."""

    expiry: float | None
    entries: list[Entry] | str  # RELEASED: the tombstone of a compensated reserve
    drop_at: float


class Look(NamedTuple):
    key: str
    level: float
    rate: float
    ends: float | None


def period(window: str, now: float) -> tuple[str, float]:
    """The UTC day or month holding ``now``: its key suffix and its end, epoch seconds."""
    return _period(window, math.floor(now / 86400))


@lru_cache(maxsize=256)  # one entry a window a day: date arithmetic showed in profiles
def _period(window: str, day: int) -> tuple[str, float]:
    today = _EPOCH + timedelta(days=day)
    if window == DAY:
        return f":{today.year:04d}-{today.month:02d}-{today.day:02d}", (day + 1) * 86400
    nxt = date(today.year + 1, 1, 1) if today.month == 12 else date(today.year, today.month + 1, 1)
    return f":{today.year:04d}-{today.month:02d}", (nxt - _EPOCH).days * 86400


def report(window: str, amount: int, level: float, seen: Look, now: float) -> tuple[int, float]:
    if window == ROLLING:
        reset = level / seen.rate if seen.rate > 0 else 0.0
        return max(0, math.floor(amount - level + EPS)), reset
    return max(0, int(amount - level)), seen.ends - now if seen.ends is not None else 0.0


def retry(b: Bucket, seen: Look, now: float) -> float | None:
    if b.cost > b.amount:
        return None
    if b.window == INFLIGHT:
        return 1.0
    if b.window != ROLLING:
        return seen.ends - now if seen.ends is not None else 0.0
    if seen.rate == 0:
        return None
    return math.ceil((seen.level + b.cost - b.amount) / seen.rate * 1000) / 1000
