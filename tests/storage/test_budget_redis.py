"""What only the Redis store must prove: keys, TTLs, Lua calendar math, TIME, errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.asyncio

from gateway.budget.store import DAY, INFLIGHT, MONTH, ROLLING, Bucket
from gateway.errors import StorageError
from gateway.storage.budget_memory import period
from gateway.storage.budget_redis import RedisStore
from gateway.storage.connection import open_store
from tests.conftest import free_port


def buckets(key: str = "p:account:a%3A1:tokens:day") -> list[Bucket]:
    return [
        Bucket(key + "r", "requests", ROLLING, 60, 10, 1, expire_cost=1),
        Bucket(key, "tokens", DAY, 86400, 1000, 300),
        Bucket(key + "m", "tokens", MONTH, 30 * 86400, 1000, 300),
        Bucket(key + "i", "concurrent", INFLIGHT, 0, 3, 1),
    ]


async def test_every_key_shares_one_hash_tag_and_has_a_ttl(
    redis_client: redis.asyncio.Redis,
) -> None:
    store = RedisStore(redis_client, prefix="t")
    reservation = await store.reserve("req 1/{x}", buckets(), ttl=600, now=None)
    assert reservation.admitted
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await redis_client.keys("*"))
    assert len(keys) == 6  # 4 counters, the record, the pending set
    assert all(k.startswith("t:{b}:") for k in keys)
    assert "t:{b}:r:/req%201%2F%7Bx%7D" in keys  # any request id is safe in a key
    assert all([await redis_client.pttl(k) > 0 for k in keys])
    assert not any("1000" in k for k in keys)  # amounts never in keys


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 6, 30, 23, 59, 59, 999000, tzinfo=UTC),
        datetime(2026, 7, 1, tzinfo=UTC),
        datetime(2024, 2, 29, 12, tzinfo=UTC),
        datetime(2025, 12, 31, 23, 0, tzinfo=UTC),
        datetime(2000, 3, 1, tzinfo=UTC),
        datetime(2100, 2, 28, 23, 59, tzinfo=UTC),
    ],
)
async def test_lua_calendar_periods_match_python(
    redis_client: redis.asyncio.Redis, moment: datetime
) -> None:
    store = RedisStore(redis_client)
    now = moment.timestamp()
    reservation = await store.reserve("r", buckets(), ttl=600, now=now)
    for bucket, state in zip(buckets(), reservation.states, strict=True):
        if bucket.window in (DAY, MONTH):
            suffix, ends = period(bucket.window, now)
            assert await redis_client.exists(f"gw:{{b}}:c:{bucket.key}{suffix}")
            assert state.reset_seconds == ends - now


async def test_redis_time_is_used_without_a_clock(redis_client: redis.asyncio.Redis) -> None:
    store = RedisStore(redis_client)
    await store.reserve("r", buckets(), ttl=600, now=None)
    seconds, _ = await redis_client.time()
    suffix, _ = period(DAY, float(seconds))
    assert await redis_client.get(f"gw:{{b}}:c:{buckets()[1].key}{suffix}") == b"300"
    assert await store.settle("r", {"tokens": 100}, now=None)
    assert not await store.settle("r", {"tokens": 100}, now=None)
    assert await redis_client.get(f"gw:{{b}}:c:{buckets()[1].key}{suffix}") == b"100"


async def test_scripts_run_by_sha(redis_client: redis.asyncio.Redis) -> None:
    store = RedisStore(redis_client)
    await store.reserve("r", buckets(), ttl=600, now=None)
    await redis_client.script_flush()  # a restarted Redis forgets scripts: reload by itself
    assert (await store.reserve("r2", buckets(), ttl=600, now=None)).admitted
    assert await redis_client.script_exists(store._reserve.sha) == [True]


async def test_redis_errors_become_storage_errors() -> None:
    store = open_store(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2)
    try:
        with pytest.raises(StorageError, match="Redis could not be reached") as caught:
            await store.reserve("r", buckets(), ttl=600, now=None)
        assert isinstance(caught.value.__cause__, redis.RedisError)
    finally:
        await store.aclose()
