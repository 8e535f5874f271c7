"""The shadow report: a shadow policy's would-be refusals, and enforcing it refuses the same."""

from __future__ import annotations

import json
import uuid

import pytest
import redis.asyncio

from gateway.admission import Gate, Refused
from gateway.apis import ANTHROPIC
from gateway.budget.decision import Decision, Refusal
from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.budget.shadow_store import ShadowRow, ShadowStore
from gateway.clusters import ClusterDirectory
from gateway.metering import RequestEstimate
from gateway.policy.model import Metric, Mode, Policy, Scope, Unit
from gateway.shadow import ShadowRecorder, format_shadow_report, report_shadow, shadow_report
from gateway.storage.budget_redis import RedisStore
from gateway.storage.connection import open_cluster_store, open_shadow_store
from gateway.storage.shadow_report import MemoryShadowStore, RedisShadowStore
from tests.budget.helpers import Clock, limit, policy
from tests.clusterkit import policies

LOOPBACK = {"type": "http", "client": ("127.0.0.1", 5000)}
# Six accounts, two rings by card; a steady stream with the clock moving between requests.
TRAFFIC = [
    (f"acct-{n % 6}", f"card-{n % 6 // 3}", 200 + 37 * (n % 5), 13.0 * (n % 4)) for n in range(60)
]


def ring_budget(mode: Mode) -> Policy:
    return policy(
        "ring-budget",
        limit(Metric.TOKENS, 4000, Unit.HOUR),
        limit(Metric.REQUESTS, 12, Unit.DAY),
        scope=Scope.CLUSTER,
        mode=mode,
    )


async def run(redis_url: str, mode: Mode) -> tuple[list[int], list[ShadowRow]]:
    """The same traffic through a Gate on a fresh key prefix: the indices refused (or that
    would be), and the stored shadow report."""
    clock = Clock()
    store = RedisStore(redis.asyncio.Redis.from_url(redis_url), prefix=uuid.uuid4().hex)
    holder = PolicyHolder(policies(ring_budget(mode)))
    engine = BudgetEngine(store, holder, clock=clock)
    directory = ClusterDirectory(open_cluster_store(store), holder, clock=clock)
    recorder = ShadowRecorder(open_shadow_store(store), clock=clock)
    gate = Gate(holder, engine, clusters=directory, shadow=recorder)
    refused = []
    try:
        for n, (account, card, tokens, pause) in enumerate(TRAFFIC):
            clock.advance(pause)
            headers = {"x-account-id": account, "x-card": card}
            estimate = RequestEstimate("m", tokens, 0, stream=False)
            try:
                caller = await gate.identify(LOOPBACK, headers)
                admission = await gate.admit(f"r{n}", caller, estimate, ANTHROPIC)
            except Refused:
                refused.append(n)
            else:
                if admission.decision.shadow_refusals:
                    refused.append(n)
        await recorder.flush()
        rows, dropped = await shadow_report(recorder.store)
        assert dropped == 0
        return refused, rows
    finally:
        await store.aclose()


async def test_enforcing_refuses_exactly_what_shadow_reported(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    shadowed, rows = await run(redis_url, Mode.SHADOW)
    enforced, nothing = await run(redis_url, Mode.ENFORCE)
    assert shadowed and shadowed == enforced and not nothing
    assert sum(r.count for r in rows) == len(shadowed)
    assert sum(r.tokens for r in rows) == sum(TRAFFIC[n][2] for n in shadowed)
    assert {r.policy for r in rows} == {"ring-budget"} and {r.scope for r in rows} == {"cluster"}
    assert len(rows) == 2 and all(r.scope_id.startswith("linked-") for r in rows)


def refusal(scope_id: str) -> Refusal:
    return Refusal(
        "watch", Scope.ACCOUNT, scope_id, limit(Metric.TOKENS, 10, Unit.DAY), 50, 1.0, True
    )


@pytest.fixture(params=["memory", "redis"])
async def shadow_store(
    request: pytest.FixtureRequest, redis_client: redis.asyncio.Redis
) -> ShadowStore:
    if request.param == "memory":
        return MemoryShadowStore(max_entries=2)
    return RedisShadowStore(redis_client, base="t:{b}:", max_entries=2)


async def test_the_report_tallies_and_keeps_the_largest_counts(shadow_store: ShadowStore) -> None:
    clock = Clock()
    seen: list[Refusal] = []
    recorder = ShadowRecorder(shadow_store, clock=clock, observers=[seen.append])
    estimate = RequestEstimate("m", 30, 20, stream=False)
    for scope_id, times in (("a:1", 3), ("b", 2), ("c", 1)):
        for _ in range(times):
            recorder.record(Decision("r", True, shadow_refusals=(refusal(scope_id),)), estimate)
            clock.advance(10)
    recorder.record(Decision("r", True), estimate)  # nothing to note
    await recorder.flush()
    recorder.record(Decision("r", True, shadow_refusals=(refusal("a:1"),)), estimate)
    await recorder.flush()
    rows, dropped = await shadow_store.rows()
    start = Clock().now
    assert rows == [
        ShadowRow("watch", "account", "a:1", 4, 200, start, start + 60),
        ShadowRow("watch", "account", "b", 2, 100, start + 30, start + 40),
    ]
    assert dropped == 1 and len(seen) == 7
    text = format_shadow_report(rows, dropped)
    assert "a:1" in text and "2026-06-05T12:00:00Z" in text and "holding 1 refusals" in text


async def test_report_shadow_prints_the_stored_report(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    assert "No shadow policy" in await report_shadow(redis_url, json=False)
    store = RedisShadowStore(redis_client, base="gw:{b}:")
    await store.add([ShadowRow("watch", "cluster", "ring-7", 5, 900, 1.0e9, 1.5e9)])
    text = await report_shadow(redis_url, json=False)
    assert text.splitlines()[1].split()[:5] == ["watch", "cluster", "ring-7", "5", "900"]
    data = json.loads(await report_shadow(redis_url, json=True))
    assert data["rows"][0]["count"] == 5 and data["dropped"] == 0
