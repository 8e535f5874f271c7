"""e. A replica SIGKILLed with streams in flight: the concurrency slots it held come back
within 30 s, and the tokens it had reserved stay charged (the upstream may have written
them; nobody will ever settle them)."""

from __future__ import annotations

import asyncio
import time

from tests.chaos.harness import Harness, poll
from tests.chaos.load import Kind, Shot

SLOTS_BACK_S = 30.0

POLICY = """\
policies:
  - name: per-account
    scope: account
    limits: {requests: 1000/day, tokens: 100000/day, concurrent: 3}
"""


async def test_e_a_killed_replica_gives_its_slots_back(chaos: Harness) -> None:
    redis = chaos.redis()
    chaos.upstream()
    doomed, survivor = chaos.start_replicas(2, storage=redis.url, policies=chaos.policy(POLICY))
    # Three streams through the doomed replica that wait 60 s upstream: in flight until it
    # dies. (All three through it: a stream through the survivor would hold its own slot.)
    long = Shot("acct-k", "org-k", Kind.STREAM, 500, latency=60)
    streams = asyncio.gather(*(chaos.send(doomed, long) for _ in range(3)), return_exceptions=True)
    try:

        async def three_upstream() -> bool:
            return len((await chaos.ledger()).active()) == 3

        await poll(three_upstream, 15, "Three streams of acct-k upstream")
        before = await chaos.usage(survivor, "account", "acct-k")
        assert before["concurrent"]["used"] == 3
        reserved = before["tokens"]["used"]
        assert reserved >= 3 * 500
        refused = await chaos.send(survivor, Shot("acct-k", "org-k"))
        assert refused.status == 429, "a fourth request while three run"
        doomed.kill()
        killed_at = time.monotonic()

        async def slots_back() -> bool:
            row = (await chaos.usage(survivor, "account", "acct-k"))["concurrent"]
            return int(row["used"]) == 0

        await poll(slots_back, SLOTS_BACK_S, "The dead replica's slots coming back")
        took = time.monotonic() - killed_at
        assert took < SLOTS_BACK_S
        after = await chaos.usage(survivor, "account", "acct-k")
        assert after["tokens"]["used"] >= reserved, (
            f"{reserved} tokens were reserved, {after['tokens']['used']} still charged "
            f"once the slots came back after {took:.1f} s"
        )
        admitted = await chaos.send(survivor, Shot("acct-k", "org-k"))
        assert admitted.status == 200
    finally:
        streams.cancel()
        await asyncio.gather(streams, return_exceptions=True)
