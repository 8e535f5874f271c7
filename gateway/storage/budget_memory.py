"""The in-process counter store: ``memory://``, and the per-replica fallback when Redis is down.

It repeats ``lua/bucket.lua``, ``lua/adjust.lua`` and ``lua/reserve.lua`` operation for
operation, in the same float arithmetic, so that memory and Redis decide alike (a
hypothesis test holds them to it). Expiry is by the clock it is given, like a Redis TTL.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping, Sequence

from gateway.budget.store import (
    ENFORCED_GROUP,
    INFLIGHT,
    ROLLING,
    Bucket,
    BucketState,
    Reservation,
    Upkeep,
)
from gateway.errors import StorageError
from gateway.storage.memory_bucket import (
    EPS,
    Entry,
    Look,
    Record,
    member,
    period,
    report,
    retry,
)
from gateway.storage.registry import moved_key, registered_cluster

GRACE = 3600.0
SWEEP_LIMIT = 16
UPKEEP_SWEEP_LIMIT = 1000
TOMBSTONE_LIFE = 600.0
RELEASED = "released"
PRUNE_EVERY = 60.0  # seconds of clock between sweeps of dead counters


class MemoryStore:
    """``CounterStore`` in one process's memory; ``now=None`` reads ``time.time()``."""

    def __init__(self, *, grace: float = GRACE, sweep_limit: int = SWEEP_LIMIT) -> None:
        self._grace = grace
        self._sweep_limit = sweep_limit
        self._rolling: dict[str, tuple[float, float]] = {}  # key → (level, updated at)
        self._rates: dict[str, float] = {}  # rolling key → drain rate, for merges
        self._registry: dict[str, set[str]] = {}  # quoted cluster id → its counter keys
        self._counts: dict[str, int] = {}
        self._drop_at: dict[str, float] = {}  # counter key → when Redis's TTL would drop it
        self._records: dict[str, Record] = {}  # member → reservation
        # (expiry, member): ordered as Redis orders its ZSET, by score then member.
        self._pending: list[tuple[float, str]] = []
        self._replicas: dict[str, float] = {}  # replica → last heartbeat
        self._batches: dict[str, float] = {}  # write-back batch → until when it is known
        self._next_prune = 0.0
        # One (when, key) entry per live counter, so a prune touches only what is due instead
        # of every counter; a counter whose drop moved later is pushed again when popped.
        self._drop_heap: list[tuple[float, str]] = []
        self._scheduled: set[str] = set()
        self._key_cluster: dict[str, str] = {}  # counter key → the cluster it is registered to

    def holds(self, request_id: str, owner: str = "") -> bool:
        found = self._records.get(member(owner, request_id))
        return found is not None and found.entries != RELEASED

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
        now = time.time() if now is None else now
        name = member(owner, request_id)
        if (held := self._records.get(name)) is not None and held.drop_at > now:
            if held.entries == RELEASED:
                raise StorageError("This reservation was released while its answer was lost.")
            return Reservation(admitted=True, states=(), repeated=True)
        self._sweep(now, self._sweep_limit)
        self._prune(now)
        look = self._look
        looks = [look(b.key, b.window, b.seconds, b.amount, now) for b in buckets]
        fitting = [
            force or seen.level + b.cost <= b.amount + EPS
            for b, seen in zip(buckets, looks, strict=True)
        ]
        # A group is debited when every bucket of it fits; nothing is unless group 0 is.
        short = {b.group for b, fits in zip(buckets, fitting, strict=True) if not fits}
        admitted = ENFORCED_GROUP not in short
        states, record = [], []
        for b, seen, fits in zip(buckets, looks, fitting, strict=True):
            level = seen.level
            if admitted and b.group not in short:
                level = level + b.cost
                self._debit(b, seen, level, now, ttl)
                if (cluster := registered_cluster(b)) is not None:
                    self._registry.setdefault(cluster, set()).add(seen.key)
                    self._key_cluster[seen.key] = cluster
                record.append(
                    Entry(
                        seen.key,
                        b.metric,
                        b.window,
                        b.seconds,
                        b.amount,
                        b.cost,
                        now,
                        b.expire_cost,
                        b.cost,
                    )
                )
            remaining, reset = report(b.window, b.amount, level, seen, now)
            retry_after = None if fits else retry(b, seen, now)
            states.append(BucketState(fits, remaining, retry_after, reset))
        if record:
            self._records[name] = Record(now + ttl, record, now + ttl + self._grace)
            heapq.heappush(self._pending, (now + ttl, name))
        return Reservation(admitted=admitted, states=tuple(states))

    async def settle(
        self, request_id: str, actual: Mapping[str, int], *, now: float | None, owner: str = ""
    ) -> bool:
        now = time.time() if now is None else now
        name = member(owner, request_id)
        found = self._records.get(name)
        if found is None or found.drop_at <= now or isinstance(found.entries, str):
            return False
        del self._records[name]
        for entry in found.entries:
            cost = actual.get(entry.metric)
            if cost is not None:
                self._adjust(entry, cost, now)
        return True

    async def extend(
        self, request_ids: Sequence[str], *, ttl: float, now: float | None, owner: str = ""
    ) -> int:
        now = time.time() if now is None else now
        extended = 0
        for request_id in request_ids:
            name = member(owner, request_id)
            found = self._records.get(name)
            if found is None or found.drop_at <= now or isinstance(found.entries, str):
                continue
            entries = found.entries
            if found.expiry is None:
                # Expired while its exchange runs (a stall, a freeze): take back what expiry
                # released (the concurrency slot), as extend.lua does.
                for entry in entries:
                    if entry.cost != entry.reserved:
                        self._adjust(entry, entry.reserved, now)
                entries = [entry._replace(cost=entry.reserved) for entry in entries]
            self._records[name] = Record(now + ttl, entries, now + ttl + self._grace)
            heapq.heappush(self._pending, (now + ttl, name))
            for entry in entries:  # its in-flight counters live as long as it does
                if entry.window == INFLIGHT and entry.key in self._counts:
                    later = max(now + ttl + self._grace, self._drop_at.get(entry.key, 0.0))
                    self._drop_later(entry.key, later)
            extended += 1
        return extended

    async def release(
        self, request_id: str, *, ttl: float, now: float | None, owner: str = ""
    ) -> bool:
        now = time.time() if now is None else now
        name = member(owner, request_id)
        found = self._records.get(name)
        if found is not None and found.drop_at > now and found.entries == RELEASED:
            return False
        undone = found is not None and found.drop_at > now
        if found is not None and undone and not isinstance(found.entries, str):
            for entry in found.entries:
                self._adjust(entry, 0, now)
        life = max(TOMBSTONE_LIFE, ttl + self._grace)
        self._records[name] = Record(None, RELEASED, now + life)
        return undone

    async def upkeep(self, owner: str, *, dead_after: float, now: float | None) -> Upkeep:
        now = time.time() if now is None else now
        mine = self._replicas.get(owner, now)
        self._replicas[owner] = now
        dead = {replica for replica, seen in self._replicas.items() if seen <= now - dead_after}
        if now - mine >= dead_after / 2:
            dead = set()  # this replica missed its own heartbeats: so did the others
        reaped = 0
        if dead:
            for replica in dead:
                del self._replicas[replica]
            prefixes = tuple(f"{replica}/" for replica in dead)
            for name, found in list(self._records.items()):
                if found.expiry is not None and name.startswith(prefixes):
                    reaped += self._expire(name, now)
        swept = self._sweep(now, UPKEEP_SWEEP_LIMIT)
        return Upkeep(replicas=len(self._replicas), reaped=reaped, swept=swept)

    async def debit(
        self, debits: Sequence[tuple[Bucket, int]], *, now: float | None, batch: str
    ) -> None:
        now = time.time() if now is None else now
        if self._batches.get(batch, 0.0) > now:
            return  # written already: this is a repeat after a lost answer
        self._batches[batch] = now + self._grace
        for b, cost in debits:
            if cost == 0 or b.window == INFLIGHT:
                continue
            seen = self._look(b.key, b.window, b.seconds, b.amount, now)
            if b.window == ROLLING:
                level = max(0.0, seen.level + cost)
                self._rolling[seen.key] = (level, now)
                self._rates[seen.key] = seen.rate
                life = level / seen.rate if seen.rate > 0 else b.seconds
                self._drop_later(seen.key, now + life + 60)
            else:
                self._counts[seen.key] = max(0, self._counts.get(seen.key, 0) + cost)
                ends = seen.ends - now if seen.ends is not None else 0
                self._drop_later(
                    seen.key, max(now + ends + self._grace, self._drop_at.get(seen.key, 0.0))
                )

    async def peek(self, buckets: Sequence[Bucket], *, now: float | None) -> list[BucketState]:
        now = time.time() if now is None else now
        states = []
        for b in buckets:
            seen = self._look(b.key, b.window, b.seconds, b.amount, now)
            fits = seen.level + b.cost <= b.amount + EPS
            remaining, reset = report(b.window, b.amount, seen.level, seen, now)
            states.append(
                BucketState(fits, remaining, None if fits else retry(b, seen, now), reset)
            )
        return states

    async def aclose(self) -> None:
        return None

    def merge_cluster(self, source: str, target: str, now: float | None) -> None:
        """Add every registered counter of cluster ``source`` into ``target``'s and drop
        it (both ids percent-encoded): what ``clusters.lua``'s ``move_budget`` does."""
        now = time.time() if now is None else now
        moved = self._registry.setdefault(target, set())
        for key in sorted(self._registry.pop(source, set())):
            into = moved_key(key, target)
            if key in self._rolling:
                rate = self._rates.get(into, self._rates.get(key, 0.0))
                level = self._drained(key, now) + self._drained(into, now)
                self._rolling[into] = (level, now)
                self._rates[into] = rate
                ends = now + level / rate + 60 if rate > 0 else self._drop_at.get(key, now)
            elif key in self._counts:
                self._counts[into] = self._counts.get(into, 0) + self._counts[key]
                ends = self._drop_at.get(key, now)
            else:
                continue
            self._drop_later(into, max(ends, self._drop_at.get(into, ends)))
            for held in (self._rolling, self._rates, self._counts, self._drop_at):
                held.pop(key, None)
            self._key_cluster.pop(key, None)
            self._key_cluster[into] = target
            moved.add(into)
        if not moved:
            del self._registry[target]

    def _drained(self, key: str, now: float) -> float:
        """A rolling level at ``now`` by its own stored rate (no rate known: as stored)."""
        held = self._rolling.get(key)
        if held is None:
            return 0.0
        rate = self._rates.get(key)
        if rate is None:
            return held[0]
        return max(0, held[0] - max(0, now - held[1]) * rate)

    def _look(self, key: str, window: str, seconds: int, amount: int, now: float) -> Look:
        if window == ROLLING:
            rate = amount / seconds
            held = self._rolling.get(key)
            if held is None:
                return Look(key, 0.0, rate, None)
            return Look(key, max(0, held[0] - max(0, now - held[1]) * rate), rate, None)
        if window == INFLIGHT:
            return Look(key, self._counts.get(key, 0), 0.0, None)
        suffix, ends = period(window, now)
        key += suffix
        return Look(key, self._counts.get(key, 0), 0.0, ends)

    def _debit(self, b: Bucket, seen: Look, level: float, now: float, ttl: float) -> None:
        if b.window == ROLLING:
            self._rolling[seen.key] = (level, now)
            self._rates[seen.key] = seen.rate
            life = level / seen.rate if seen.rate > 0 else b.seconds
            self._drop_later(seen.key, now + life + 60)
        else:
            self._counts[seen.key] = self._counts.get(seen.key, 0) + b.cost
            ends = seen.ends - now if seen.ends is not None else 0
            self._drop_later(seen.key, now + ends + ttl + self._grace)

    def _adjust(self, e: Entry, actual: int, now: float) -> None:
        delta = actual - e.cost
        if delta == 0:
            return
        if e.window == ROLLING:
            seen = self._look(e.key, e.window, e.seconds, e.amount, now)
            level = seen.level
            if delta > 0:
                level = level + delta
            else:
                left = e.cost - max(0, now - e.at) * seen.rate
                if left > 0:
                    level = max(0, level - min(-delta, left))
            self._rolling[e.key] = (level, now)
            self._rates[e.key] = seen.rate
            life = level / seen.rate if seen.rate > 0 else e.seconds
            self._drop_later(e.key, now + life + 60)
            return
        if delta < 0 and e.key not in self._counts:
            return
        self._counts[e.key] = max(0, self._counts.get(e.key, 0) + delta)
        self._drop_at.setdefault(e.key, now + self._grace)

    def _sweep(self, now: float, limit: int) -> int:
        swept = 0
        while self._pending and self._pending[0][0] <= now and swept < limit:
            expiry, name = heapq.heappop(self._pending)
            found = self._records.get(name)
            if found is None or found.expiry != expiry:
                continue  # settled, extended, or reserved again under the same id
            swept += self._expire(name, now)
        return swept

    def _expire(self, name: str, now: float) -> int:
        """``adjust.lua``'s ``expire_member``: free the slot, keep what was kept, and keep
        the record, settled at that, for a late settle."""
        found = self._records[name]
        if isinstance(found.entries, str):
            return 0
        kept = []
        for entry in found.entries:
            self._adjust(entry, entry.kept, now)
            kept.append(entry._replace(cost=entry.kept))
        self._records[name] = Record(None, kept, now + self._grace)
        return 1

    def _drop_later(self, key: str, at: float) -> None:
        self._drop_at[key] = at
        if key not in self._scheduled:
            self._scheduled.add(key)
            heapq.heappush(self._drop_heap, (at, key))

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY
        heap = self._drop_heap
        while heap and heap[0][0] <= now:
            at, key = heapq.heappop(heap)
            due = self._drop_at.get(key)
            if due is not None and due > at:
                heapq.heappush(heap, (due, key))  # extended since it was scheduled
                continue
            # A drop moved earlier happens here, later than Redis's TTL would: by then a
            # rolling level has drained to 0 and a calendar count's period is over.
            self._scheduled.discard(key)
            if due is None:
                continue  # already moved away by a cluster merge
            del self._drop_at[key]
            self._rolling.pop(key, None)
            self._rates.pop(key, None)
            self._counts.pop(key, None)
            cluster = self._key_cluster.pop(key, None)
            if cluster is not None and (keys := self._registry.get(cluster)) is not None:
                keys.discard(key)
                if not keys:
                    del self._registry[cluster]
        for name in [name for name, found in self._records.items() if found.drop_at <= now]:
            del self._records[name]
