"""A Redis Cluster master failing over to its replica, under a running gateway.

Real processes: ``gateway serve`` on ``redis+cluster://`` (three masters, one replica each),
``gateway mock-upstream`` (its ledger is what was really served), and raw redis-py clients
reading the counters on the node that holds them. Every gateway key shares one hash tag, so
one master holds them all: that master is killed, and its replica is held back from taking
over (``hold_failover``) while requests go through, then released.

What is guaranteed, and so asserted: while the slot has no master every answer is an
admission under the fallback share or a refusal in the API's shape, never a 500; once the
replica has taken over, the same gateway process counts on it (the admin API and a raw read
of the promoted node agree); the account's admissions add up to its limit exactly. Exactly,
because the debits made before the kill are on the replica (``WAIT``). Replication is
asynchronous: without that, debits the master acknowledged in its last moment (its
replication lag) die with it, and the gateway would admit that many more
(docs/reliability.md).

Two store-level tests hold the storage boundary to what redis-py's cluster client raises on
the way (none of it a ``RedisError``): an ``AttributeError`` from its cleanup when many calls
meet the dying master at once, and ``RedisClusterException`` when no node answers; and a
gateway started while no node answers comes up and serves.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass

import httpx
import pytest
import redis

from gateway.budget.store import Bucket
from gateway.errors import StorageError
from gateway.storage.connection import close, open_store
from tests.chaos import conftest as chaos_conftest
from tests.chaos.harness import Harness, poll
from tests.chaos.load import Shot, Steady
from tests.chaos.processes import Replica
from tests.conftest import free_port
from tests.rediscluster import LocalCluster, wait_until

LIMIT = 10
BEFORE = 4  # admitted through the master that dies
DURING = 3  # sent while its slots have no master
BASE = "gw:{b}:"  # the start of every gateway key (budget_redis.RedisStore.base)
DEADLINE_S = 60.0
RACE_S = 0.5  # reserves running before the kill, and after it: the scenario, not a wait
POLICY = f"""\
policies:
  - name: per-account
    scope: account
    limits: {{requests: {LIMIT}/month}}
    overrides:  # traffic through the kill that no limit refuses
      acct-load-1: {{requests: 1000000/month}}
      acct-load-2: {{requests: 1000000/month}}
"""
LOAD = [Shot("acct-load-1", "org-load"), Shot("acct-load-2", "org-load")]
# The chaos suite's ``chaos`` fixture, here too: every process it started is stopped
# however the test ends.
chaos = chaos_conftest.chaos


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: str


async def _ask(replica: Replica, account: str) -> Answer:
    shot = Shot(account, "org-f")
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as http:
        response = await http.post(
            f"{replica.url}/v1/messages", json=shot.body(), headers=shot.headers()
        )
    return Answer(response.status_code, response.text)


def _api_refusal(answer: Answer) -> bool:
    """A refusal in the Anthropic error shape, as a client library reads it."""
    try:
        body = json.loads(answer.body)
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return (
        answer.status in (429, 503)
        and body.get("type") == "error"
        and isinstance(error, dict)
        and error.get("type") in ("rate_limit_error", "overloaded_error", "api_error")
        and bool(error.get("message"))
    )


def _master_of(cluster: LocalCluster, key: str) -> int:
    """The port of the master serving ``key``'s slot, as a fresh cluster client learns it."""
    client = redis.RedisCluster(host="127.0.0.1", port=cluster.masters()[0], socket_timeout=2)
    try:
        node = client.get_node_from_key(key)
        assert node is not None
        return int(node.port)
    finally:
        client.close()


def _counted_on(port: int, account: str) -> int:
    """Requests counted for ``account`` on the node on ``port``, read there and nowhere else."""
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        keys = client.scan_iter(match=f"{BASE}c:per-account:account:{account}:requests:month:*")
        return sum(int(client.get(key) or 0) for key in keys)
    finally:
        client.close()


def _replicated(port: int) -> int:
    """One write on the master on ``port``, then WAIT: replication is one ordered stream,
    so a replica holding this write holds every earlier one. How many replicas do."""
    client = redis.Redis(port=port, socket_timeout=10)
    try:
        client.set(BASE + "failover-test", "1")
        return int(client.execute_command("WAIT", 1, 5000))
    finally:
        client.close()


async def _whole_again(cluster: LocalCluster, victim: int) -> None:
    """The killed master back (as its heir's replica): the session's cluster as it was."""
    cluster.restart(victim)
    await asyncio.to_thread(cluster.wait_ok, DEADLINE_S)


async def test_a_master_failing_over_is_served_through_without_restart_or_over_admission(
    chaos: Harness, redis_cluster_with_replicas: LocalCluster
) -> None:
    cluster = redis_cluster_with_replicas
    await asyncio.to_thread(cluster.wait_ok, DEADLINE_S)
    cluster.flushall()
    chaos.upstream()
    (gateway,) = chaos.start_replicas(1, storage=cluster.uri, policies=chaos.policy(POLICY))
    assert gateway.process is not None
    pid = gateway.process.pid

    before = [await _ask(gateway, "acct-f") for _ in range(BEFORE)]
    assert [a.status for a in before] == [200] * BEFORE
    victim = _master_of(cluster, BASE + "pending")
    heir = cluster.replica_of(victim)
    assert _counted_on(victim, "acct-f") == BEFORE
    assert _replicated(victim) == 1, "the replica did not acknowledge the debits in 5 s"

    load = Steady([gateway.url], LOAD, workers=16, limit=100_000)
    load.start()
    cluster.hold_failover(heir, held=True)
    cluster.kill(victim)
    try:
        try:
            during = [await _ask(gateway, "acct-f")]  # dead, not yet known to the cluster
            await asyncio.to_thread(
                wait_until,
                lambda: cluster.cluster_state(heir) == "fail",
                DEADLINE_S,
                f"the cluster marking its master on port {victim} failed",
            )
            during += [await _ask(gateway, "acct-f") for _ in range(DURING - 1)]
            assert heir not in cluster.masters(), "the replica took over while held"
        finally:
            cluster.hold_failover(heir, held=False)

        # (1) No master for the slot: each answer an admission under the fallback share
        # (all that was left, for a lone replica) or a refusal in the API's shape.
        for answer in during:
            assert answer.status == 200 or _api_refusal(answer), (answer, gateway.tail(40))
        admitted_during = sum(a.status == 200 for a in during)

        await asyncio.to_thread(cluster.wait_ok, DEADLINE_S)
        assert _master_of(cluster, BASE + "pending") == heir
        loaded = await load.stop()
        assert {o.status for o in loaded} <= {200, 429, 503}, (
            {o.status or o.error for o in loaded},
            gateway.tail(40),
        )

        # (2) The same process counts on the promoted replica: what it admitted alone is
        # written back there, and the admin API reads it from there.
        async def written_back() -> bool:
            try:
                usage = await chaos.usage(gateway, "account", "acct-f")
            except httpx.HTTPError:
                return False
            return bool(usage["requests"]["used"] == BEFORE + admitted_during)

        await poll(written_back, DEADLINE_S, "The gateway reading its write-back from the heir")
        assert _counted_on(heir, "acct-f") == BEFORE + admitted_during
        after: list[Answer] = []
        while not after or after[-1].status == 200:
            assert len(after) <= LIMIT, "admitted past the limit after the fail-over"
            after.append(await _ask(gateway, "acct-f"))
        assert _api_refusal(after[-1]) and after[-1].status == 429, after[-1]
        assert _counted_on(heir, "acct-f") == LIMIT
        assert (await _ask(gateway, "acct-g")).status == 200
        assert _counted_on(heir, "acct-g") == 1
        assert gateway.alive and gateway.process.pid == pid, "the gateway was restarted"

        # (3) Never more than the limit: as the gateway answered, and as the upstream served.
        statuses = [a.status for a in before + during + after]
        assert statuses.count(200) == LIMIT, statuses
        assert (await chaos.ledger()).requests("account", "acct-f") == LIMIT
        assert "Traceback" not in gateway.log.read_text(errors="replace"), gateway.tail(60)
    finally:
        await load.stop()
        await _whole_again(cluster, victim)


async def test_reserves_meeting_a_dying_master_fail_only_as_storage_errors(
    redis_cluster_with_replicas: LocalCluster,
) -> None:
    """Sixteen reserves at a time when the master dies. redis-py's cluster client, cleaning
    up after one call's dead connection, can pull the socket from under another call's
    handshake: an AttributeError (this test met one in 2 of 3 runs before ``calls.py``
    translated it). Whatever redis-py raises must reach the engine as a StorageError, and
    the same store must serve again on the heir."""
    cluster = redis_cluster_with_replicas
    await asyncio.to_thread(cluster.wait_ok, DEADLINE_S)
    cluster.flushall()
    store = open_store(cluster.uri, prefix="race")
    buckets = [Bucket("acct-race", "requests", "day", 86400, 10**9, 1)]
    ids = itertools.count()
    stray: list[Exception] = []
    stop = asyncio.Event()

    async def reserving() -> None:
        while not stop.is_set():
            try:
                await store.reserve(f"r{next(ids)}", buckets, ttl=60, now=None)
            except StorageError:
                await asyncio.sleep(0.01)
            except Exception as exc:
                stray.append(exc)
                await asyncio.sleep(0.01)

    async def served() -> bool:
        try:
            return (await store.reserve(f"r{next(ids)}", buckets, ttl=60, now=None)).admitted
        except StorageError:
            return False

    victim = _master_of(cluster, "race:{b}:pending")
    workers = [asyncio.create_task(reserving()) for _ in range(16)]
    try:
        await asyncio.sleep(RACE_S)
        cluster.kill(victim)
        try:
            await asyncio.sleep(RACE_S)
            stop.set()
            await asyncio.gather(*workers)
            assert stray == [], [f"{type(e).__name__}: {e}" for e in stray]
            await asyncio.to_thread(cluster.wait_ok, DEADLINE_S)
            await poll(served, DEADLINE_S, "A reserve on the heir")
        finally:
            await _whole_again(cluster, victim)
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await close(store)


async def test_a_cluster_no_node_of_which_answers_is_an_outage_not_a_crash() -> None:
    """No node answering (every one gone): each call is a StorageError, though redis-py's
    RedisClusterException is no RedisError (it reached the client as a 500)."""
    store = open_store(f"redis+cluster://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(StorageError) as caught:
            await store.reserve(
                "r1", [Bucket("a", "requests", "day", 86400, 10, 1)], ttl=60, now=None
            )
        assert caught.value.kind == "down"
        assert "RedisClusterException: Redis Cluster cannot be connected" in str(caught.value)
    finally:
        await close(store)


async def test_a_gateway_started_while_no_cluster_node_answers_serves(chaos: Harness) -> None:
    """Started before its Redis Cluster (or while every node is away), the gateway comes up
    and answers from its fallback share, where it stopped with "Application startup
    failed" (redis-py's RedisClusterException escaped the slot warm-up and the overrides
    load)."""
    chaos.upstream()
    storage = f"redis+cluster://127.0.0.1:{free_port()}"
    (gateway,) = chaos.start_replicas(1, storage=storage, policies=chaos.policy(POLICY))
    answers = [await _ask(gateway, "acct-s") for _ in range(2)]
    assert all(a.status == 200 or _api_refusal(a) for a in answers), answers
    async with httpx.AsyncClient() as http:
        ready = (await http.get(f"{gateway.admin_url}/readyz")).json()
    assert ready["ready"] is True and ready["storage"] == "down"
