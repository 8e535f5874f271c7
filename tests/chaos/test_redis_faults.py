"""Redis misbehaving under load: stalled, killed and restarted empty, gone.

c. SIGSTOP for 2 s, then SIGCONT: afterwards no concurrency slot is held (an account
   allowed one request at a time can send again within a few seconds), and real spend
   stayed within the request and token limits throughout.
d. SIGKILL, then a restart with nothing in it: the gateway serves again and counts in
   Redis again, an account limit binds across replicas again, and within a few seconds the
   policy's links are back and a linked-accounts limit binds again.
f. Gone for good, two replicas, an ``on_storage_error: open`` limit of 10 a day: at most
   10 requests reach the upstream across both.
"""

from __future__ import annotations

import asyncio
import itertools

from tests.chaos.harness import Harness, poll
from tests.chaos.ledger import Limits
from tests.chaos.load import Kind, Shot, Steady
from tests.chaos.processes import Replica

STALL_S = 2.0  # how long Redis is stopped: the scenario itself, not a wait for something
RECOVER_S = 10.0  # "within a few seconds" of Redis answering again

STALL_POLICY = """\
policies:
  - name: per-account
    scope: account
    limits: {requests: 30/day, tokens: 3000/day, concurrent: 2}
    overrides:
      acct-solo: {requests: 100000/day, concurrent: 1}
  - name: per-org
    scope: organization
    limits: {requests: 80/day, tokens: 8000/day, concurrent: 6}
"""
STALL_ACCOUNTS = {f"acct-{i}": Limits(requests=30, tokens=3000) for i in range(1, 5)}
STALL_ORGS = {"org-1": Limits(requests=80, tokens=8000)}
STALL_SCOPES = [("account", "acct-solo"), ("organization", "org-solo")]
STALL_SCOPES += [("account", a) for a in STALL_ACCOUNTS] + [("organization", "org-1")]


async def test_c_redis_stalled_for_two_seconds_under_load(chaos: Harness) -> None:
    redis = chaos.redis()
    chaos.upstream(output_tokens=40, token_delay=0.01)
    replicas = chaos.start_replicas(2, storage=redis.url, policies=chaos.policy(STALL_POLICY))
    shots = [Shot(a, "org-1", Kind.STREAM, 50) for a in STALL_ACCOUNTS]
    shots.append(Shot("acct-solo", "org-solo", Kind.STREAM, 50))
    load = Steady(chaos.urls(), shots, workers=8, limit=1500)
    load.start()
    try:

        async def solo_running() -> bool:
            ledger = await chaos.ledger()
            return len(ledger.entries) >= 10 and any(
                e.account == "acct-solo" for e in ledger.active()
            )

        await poll(solo_running, 15, "Load flowing with a request of acct-solo upstream")
        redis.stall()
        try:
            await asyncio.sleep(STALL_S)
        finally:
            redis.resume()
    finally:
        await load.stop()
    solo = Shot("acct-solo", "org-solo", Kind.JSON, 5)
    turns = itertools.cycle(replicas)

    async def solo_admitted() -> bool:
        return (await chaos.send(next(turns), solo)).status == 200

    await poll(solo_admitted, RECOVER_S, "acct-solo (concurrent: 1) being admitted again")
    await chaos.settled(replicas[0], STALL_SCOPES)
    ledger = await chaos.ledger()
    problems = ledger.violations("account", STALL_ACCOUNTS)
    problems += ledger.violations("organization", STALL_ORGS)
    assert problems == [], problems


RESTART_POLICY = """\
policies:
  - name: per-account
    scope: account
    limits: {requests: 5/day, concurrent: 4}
  - name: per-ring
    scope: cluster
    limits: {requests: 6/day}
clusters:
  links:
    ring-1: [acct-l1, acct-l2]
  disclose: true
"""


async def _counted_in_redis(chaos: Harness, one: Replica, other: Replica) -> None:
    """Until a request through ``one`` is admitted and ``other`` reads it from Redis: the
    gateway serves again and counts in the shared store, not in its own memory."""
    probes = (f"acct-probe-{n}" for n in itertools.count())

    async def counted() -> bool:
        account = next(probes)
        if (await chaos.send(one, Shot(account, "org-p"))).status != 200:
            return False
        return bool((await chaos.usage(other, "account", account))["requests"]["used"] == 1)

    await poll(counted, 20, "A request counted in the restarted Redis")


async def test_d_redis_killed_and_restarted_empty_under_load(chaos: Harness) -> None:
    redis = chaos.redis()
    chaos.upstream(output_tokens=20, token_delay=0.01)
    a, b = chaos.start_replicas(2, storage=redis.url, policies=chaos.policy(RESTART_POLICY))
    load = Steady(
        chaos.urls(),
        [Shot(f"acct-w{i}", "org-w", Kind.STREAM, 30) for i in range(1, 5)],
        workers=6,
        limit=1500,
    )
    load.start()
    try:
        await poll(lambda: _at_least(load, 20), 15, "Load flowing before the kill")
        redis.kill()
        seen = len(load.outcomes)
        await poll(lambda: _at_least(load, seen + 20), 15, "Load flowing while Redis is gone")
        await asyncio.to_thread(redis.start)
        seen = len(load.outcomes)
        await poll(lambda: _at_least(load, seen + 20), 15, "Load flowing after the restart")
    finally:
        await load.stop()
    await _counted_in_redis(chaos, a, b)
    await _counted_in_redis(chaos, b, a)
    # An account limit binds across both replicas again ...
    for replica in (a, b, a, b, a, b, a, b):
        await chaos.send(replica, Shot("acct-x", "org-x"))

    # ... and the policy's link is back: two accounts of 5 a day, 4 requests each (8
    # unlinked), share the ring's 6.
    async def linked_everywhere() -> bool:
        return all([await chaos.linked(r, "acct-l1") for r in (a, b)])

    await poll(linked_everywhere, RECOVER_S, "The policy's link ring-1 back on both replicas")
    for replica, account in itertools.product((a, b), ("acct-l1", "acct-l2") * 2):
        await chaos.send(replica, Shot(account, "org-l"))
    ledger = await chaos.ledger()
    assert ledger.requests("account", "acct-x") == 5
    ring = ledger.requests("account", "acct-l1") + ledger.requests("account", "acct-l2")
    assert ring == 6, f"the linked accounts got {ring} requests through, the ring allows 6"


async def _at_least(load: Steady, count: int) -> bool:
    return len(load.outcomes) >= count


OUTAGE_POLICY = """\
policies:
  - name: per-account
    scope: account
    on_storage_error: open
    limits: {requests: 10/day}
"""


async def test_f_two_replicas_during_an_outage_admit_the_limit_once(chaos: Harness) -> None:
    redis = chaos.redis()
    chaos.upstream()
    a, b = chaos.start_replicas(2, storage=redis.url, policies=chaos.policy(OUTAGE_POLICY))
    for replica in (a, b):  # both have used Redis before it goes
        assert (await chaos.send(replica, Shot("acct-warm", "org-w"))).status == 200
    redis.kill()
    outcomes = await chaos.burst([Shot("acct-f", "org-f")] * 40, concurrency=8)
    admitted = (await chaos.ledger()).requests("account", "acct-f")
    statuses = sorted(str(o.status) for o in outcomes)
    assert 1 <= admitted <= 10, f"{admitted} admitted across both replicas; saw {statuses}"
