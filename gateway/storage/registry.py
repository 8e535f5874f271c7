"""Cluster budget registries: which counters a cluster owns, so a merge can move them.

When two clusters merge, the absorbed cluster's spend must follow its accounts, yet
counter keys carry no amounts and Redis cannot be listed cheaply (``KEYS`` and ``SCAN``
walk everything). So every store, when it debits a cluster-scope counter, adds the
counter's key to a set named by the cluster: ``{prefix}:{{tag}}:k:{cluster id}`` on Redis.
In-flight counters are left out: their pending reservations will decrement the key they
were taken on, so moving them would leak slots.

Bucket keys come from ``gateway.budget.buckets.bucket_key``: ``policy:scope:scope id:
metric:window``, each part percent-encoded, so splitting on ``:`` is exact.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote

from gateway.budget.store import INFLIGHT, Bucket
from gateway.policy.model import Scope

# A registry outlives every counter it lists: a month's counter lives until the month
# ends (at most 31 days) plus the reservation TTL and grace, which callers add.
REGISTRY_LIFE = 31 * 86400.0


def quote_id(value: str) -> str:
    """A key part as ``bucket_key`` writes it (and ``clusters.lua``'s ``enc``)."""
    return quote(value, safe="")


def registered_cluster(bucket: Bucket) -> str | None:
    """The percent-encoded cluster id whose registry lists this bucket's counter, if any."""
    if bucket.window == INFLIGHT:
        return None
    return _cluster_of(bucket.key)


@lru_cache(maxsize=131072)  # asked for every bucket of every request
def _cluster_of(key: str) -> str | None:
    parts = key.split(":", 3)
    if len(parts) == 4 and parts[1] == Scope.CLUSTER.value:
        return parts[2]
    return None


def moved_key(key: str, target: str) -> str:
    """``key`` (a cluster-scope counter key, without the store's prefix) with its cluster
    id replaced by ``target`` (percent-encoded): where its spend goes in a merge."""
    policy, scope, _, rest = key.split(":", 3)
    return f"{policy}:{scope}:{target}:{rest}"
