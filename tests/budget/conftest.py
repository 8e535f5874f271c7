from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from gateway.budget.store import CounterStore
from gateway.storage.budget_memory import MemoryStore
from gateway.storage.connection import open_store


@pytest.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, redis_url: str, redis_client: redis.asyncio.Redis
) -> AsyncIterator[CounterStore]:
    """Every engine test runs on both stores: they must decide alike."""
    opened: CounterStore = MemoryStore() if request.param == "memory" else open_store(redis_url)
    try:
        yield opened
    finally:
        await opened.aclose()
