"""Bursts on healthy storage: what really reached the upstream stays within every limit.

a. 600 mixed requests over three replicas on one Redis.
b. The same on a three-master Redis Cluster.
And the reported over-admission: two fresh replicas, a fresh cluster, 200 requests at once.
"""

from __future__ import annotations

from collections import Counter

from tests.chaos import burst
from tests.chaos.harness import Harness
from tests.chaos.load import Shot
from tests.rediscluster import LocalCluster


async def test_a_burst_over_three_replicas_on_one_redis(chaos: Harness) -> None:
    redis = chaos.redis()
    chaos.upstream(output_tokens=burst.OUTPUT_TOKENS, token_delay=burst.TOKEN_DELAY)
    chaos.start_replicas(3, storage=redis.url, policies=chaos.policy(burst.POLICY))
    outcomes = await chaos.burst(burst.shots())
    await burst.check(chaos, outcomes)


async def test_b_burst_over_three_replicas_on_a_redis_cluster(
    chaos: Harness, flushed_redis_cluster: str
) -> None:
    chaos.upstream(output_tokens=burst.OUTPUT_TOKENS, token_delay=burst.TOKEN_DELAY)
    chaos.start_replicas(3, storage=flushed_redis_cluster, policies=chaos.policy(burst.POLICY))
    outcomes = await chaos.burst(burst.shots())
    await burst.check(chaos, outcomes)


FRESH_POLICY = """\
policies:
  - name: per-account
    scope: account
    limits: {requests: 100/day}
  - name: per-org
    scope: organization
    limits: {requests: 1000/day}
  - name: per-ring
    scope: cluster
    limits: {requests: 1000/day}
clusters:
  link_by:
    - header: x-card
  disclose: true
"""


async def test_fresh_replicas_on_a_fresh_cluster_admit_exactly_the_limit(
    chaos: Harness, flushed_redis_cluster: str, redis_cluster_nodes: LocalCluster
) -> None:
    """The report: 200 requests at once from two fresh replicas on a fresh cluster admitted
    172 of an account's 100. Fresh means new clients (no connections, slots not loaded)
    and no script loaded on any node."""
    redis_cluster_nodes.flush_scripts()
    chaos.upstream()
    chaos.start_replicas(2, storage=flushed_redis_cluster, policies=chaos.policy(FRESH_POLICY))
    shots = [Shot("acct-1", "org-1")] * 200
    outcomes = await chaos.burst(shots, concurrency=200)
    ledger = await chaos.ledger()
    statuses = Counter(o.status for o in outcomes)
    assert ledger.requests("account", "acct-1") == 100, (statuses, chaos.tails())
    assert statuses == {200: 100, 429: 100}
