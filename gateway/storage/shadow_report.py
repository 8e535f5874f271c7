"""Where the shadow report is kept: ``RedisShadowStore`` (``lua/shadow.lua``) and
``MemoryShadowStore`` (the same arithmetic, for ``memory://``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from gateway.budget.shadow_store import ShadowRow
from gateway.storage.budget_redis import Client, lua
from gateway.storage.calls import CallLimit
from gateway.storage.registry import quote_id

MAX_ENTRIES = 1000  # (policy, scope, scope id) rows kept; the smallest counts go first


def entry_of(row: ShadowRow) -> str:
    return ":".join(quote_id(part) for part in (row.policy, row.scope, row.scope_id))


def _parts(entry: str) -> tuple[str, str, str]:
    policy, scope, scope_id = (unquote(part) for part in entry.split(":"))
    return policy, scope, scope_id


def _ordered(rows: list[ShadowRow]) -> list[ShadowRow]:
    return sorted(rows, key=lambda r: (-r.count, r.policy, r.scope, r.scope_id))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisShadowStore:
    """``ShadowStore`` on Redis, under the budget store's key base (``…:sh:…``)."""

    def __init__(
        self,
        client: Client,
        *,
        base: str,
        max_entries: int = MAX_ENTRIES,
        limit: CallLimit | None = None,
    ) -> None:
        self.client = client
        self._limit = limit if limit is not None else CallLimit()
        self._keys = [f"{base}sh:{name}" for name in ("n", "t", "f", "l", "dropped")]
        self._max_entries = max_entries
        self._add = client.register_script(lua("shadow"))

    async def add(self, rows: Sequence[ShadowRow]) -> None:
        if not rows:
            return
        args: list[str | int] = [self._max_entries]
        for r in rows:
            args += [entry_of(r), r.count, r.tokens, repr(r.first_seen), repr(r.last_seen)]
        await self._limit.run(lambda: self._add(keys=self._keys, args=args), "a shadow tally")

    async def rows(self) -> tuple[list[ShadowRow], int]:
        counts_key, tokens_key, first_key, last_key, dropped_key = self._keys

        async def read() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zrange(counts_key, 0, -1, withscores=True)
                pipe.hgetall(tokens_key)
                pipe.hgetall(first_key)
                pipe.hgetall(last_key)
                pipe.get(dropped_key)
                found: list[Any] = await pipe.execute()
                return found

        counts, tokens, first, last, dropped = await self._limit.run(read, "a shadow report")
        tokens, first, last = (
            {_text(k): _text(v) for k, v in found.items()} for found in (tokens, first, last)
        )
        rows = []
        for member, score in counts:
            entry = _text(member)
            rows.append(
                ShadowRow(
                    *_parts(entry),
                    count=int(score),
                    tokens=int(tokens.get(entry, 0)),
                    first_seen=float(first.get(entry, 0)),
                    last_seen=float(last.get(entry, 0)),
                )
            )
        return _ordered(rows), int(dropped or 0)


class MemoryShadowStore:
    """``ShadowStore`` in one process's memory."""

    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        self._rows: dict[str, ShadowRow] = {}
        self._dropped = 0
        self._max_entries = max_entries

    async def add(self, rows: Sequence[ShadowRow]) -> None:
        for r in rows:
            entry = entry_of(r)
            known = self._rows.get(entry)
            if known is not None:
                r = ShadowRow(
                    r.policy,
                    r.scope,
                    r.scope_id,
                    known.count + r.count,
                    known.tokens + r.tokens,
                    min(known.first_seen, r.first_seen),
                    max(known.last_seen, r.last_seen),
                )
            self._rows[entry] = r
        over = len(self._rows) - self._max_entries
        if over > 0:
            for entry in sorted(self._rows, key=lambda e: (self._rows[e].count, e))[:over]:
                self._dropped += self._rows.pop(entry).count

    async def rows(self) -> tuple[list[ShadowRow], int]:
        return _ordered(list(self._rows.values())), self._dropped
