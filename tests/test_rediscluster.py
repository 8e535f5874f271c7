"""The Redis Cluster fixture: three masters that take writes, and a replica for each that
takes over when its master dies."""

from __future__ import annotations

import redis
from redis.asyncio.cluster import RedisCluster

from gateway.storage.connection import open_redis
from tests.rediscluster import LocalCluster


def _key_on(port: int, cluster: redis.RedisCluster) -> str:
    """A key whose slot the master on ``port`` serves."""
    for index in range(100_000):
        key = f"probe:{index}"
        node = cluster.get_node_from_key(key)
        if node is not None and node.port == port:
            return key
    raise AssertionError(f"No key of 100,000 maps to the master on port {port}.")


async def test_keys_are_written_on_every_master(
    flushed_redis_cluster: str, redis_cluster_nodes: LocalCluster
) -> None:
    masters = redis_cluster_nodes.masters()
    assert len(masters) == 3
    sync = redis.RedisCluster(host="127.0.0.1", port=masters[0])
    keys = {port: _key_on(port, sync) for port in masters}
    sync.close()
    client = open_redis(flushed_redis_cluster)
    assert isinstance(client, RedisCluster)
    try:
        for port, key in keys.items():
            await client.set(key, str(port))
    finally:
        await client.aclose()
    for port, key in keys.items():
        node = redis.Redis(port=port)
        try:
            assert node.get(key) == str(port).encode()
            assert node.dbsize() == 1
        finally:
            node.close()


def test_flush_empties_every_master(redis_cluster_nodes: LocalCluster) -> None:
    sync = redis.RedisCluster(host="127.0.0.1", port=redis_cluster_nodes.masters()[0])
    try:
        sync.mset_nonatomic({f"k{i}": i for i in range(50)})
        redis_cluster_nodes.flushall()
        assert sync.dbsize(target_nodes=redis.RedisCluster.PRIMARIES) == 0
    finally:
        sync.close()


def test_a_replica_takes_over_a_killed_master(
    redis_cluster_with_replicas: LocalCluster,
) -> None:
    cluster = redis_cluster_with_replicas
    masters = cluster.masters()
    assert len(masters) == 3 and len(cluster.nodes) == 6
    sync = redis.RedisCluster(host="127.0.0.1", port=masters[0], socket_timeout=2)
    try:
        victim = masters[0]
        key = _key_on(victim, sync)
        sync.set(key, "kept")
        sync.wait(1, 2000, target_nodes=sync.get_node_from_key(key))
        cluster.kill(victim)
        cluster.wait_ok(30)
        assert victim not in cluster.masters()
        cluster.restart(victim)
        cluster.wait_ok(30)
        assert victim not in cluster.masters()
    finally:
        sync.close()
    client = redis.RedisCluster(host="127.0.0.1", port=cluster.masters()[0])
    try:
        assert client.get(key) == b"kept"
    finally:
        client.close()
