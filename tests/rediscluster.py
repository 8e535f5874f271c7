"""A real Redis Cluster for tests: ``redis-server`` nodes in a temp dir, joined by ``redis-cli``.

``LocalCluster.start(masters=3, replicas=0)`` runs one ``redis-server --cluster-enabled yes``
per node on free ports below 55536 (the cluster bus is the port + 10000, so both must be
free), joins them with ``redis-cli --cluster create … --cluster-replicas N --cluster-yes``
and waits until every node reports ``cluster_state:ok``. ``uri`` is the
``redis+cluster://127.0.0.1:p1,…`` form ``gateway.storage.connection.open_redis`` takes.
``kill``, ``restart`` and ``wait_ok`` let a fail-over test take a master away and bring it
back (it rejoins from its ``nodes.conf``); ``hold_failover`` keeps a replica from taking
over until released, so a test can act while a slot has no master. ``stop`` ends every
process and removes the dir.

Every wait polls up to a deadline; every failure is one sentence naming the node.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

INSTALL = (
    "Redis Cluster tests need redis-server and redis-cli on the PATH: install Redis "
    "(Debian: apt-get install redis-server; macOS: brew install redis)."
)
BUS_OFFSET = 10_000
# Below Linux's ephemeral range (32768+) for both the port and its bus, so an outgoing
# connection of another test cannot take a node's port between the check and the bind.
PORTS = (12_000, 22_700)
NODE_TIMEOUT_MS = 2000


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_ports(count: int, taken: set[int] | None = None) -> list[int]:
    """``count`` ports whose port and bus port (+10000) are both free, all below 55536."""
    chosen: list[int] = []
    avoid = set(taken or ())
    for _ in range(2000):
        if len(chosen) == count:
            return chosen
        port = random.randrange(*PORTS)
        if {port, port + BUS_OFFSET} & avoid:
            continue
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            chosen.append(port)
            avoid |= {port, port + BUS_OFFSET}
    raise RuntimeError(f"Found only {len(chosen)} of {count} free port pairs in {PORTS}.")


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``check`` every 50 ms until it holds; after ``seconds``, fail naming ``what``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {seconds:g} s.")
        time.sleep(0.05)


def _info(port: int, section: str) -> dict[str, str]:
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        # redis-py parses both replies into dicts (CLUSTER INFO's values stay strings)
        found = client.execute_command("CLUSTER INFO") if section == "cluster" else None
        info = found if isinstance(found, dict) else client.info(section)
        return {str(key): str(value) for key, value in info.items()}
    except (redis.RedisError, OSError):
        return {}
    finally:
        client.close()


def pings(port: int) -> bool:
    """Whether a Redis on this loopback port answers PING now."""
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@dataclass
class Node:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, binary: str) -> None:
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def answers(self) -> bool:
        return pings(self.port)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class LocalCluster:
    """A Redis Cluster of local ``redis-server`` processes (see the module docstring)."""

    nodes: list[Node]
    workdir: Path
    replicas: int
    binary: str
    cli: str
    masters_wanted: int = 3
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, masters: int = 3, replicas: int = 0) -> LocalCluster:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise FileNotFoundError(INSTALL)
        workdir = Path(tempfile.mkdtemp(prefix="gateway-test-rediscluster-"))
        ports = cluster_ports(masters * (1 + replicas))
        nodes = []
        for port in ports:
            (workdir / str(port)).mkdir()
            nodes.append(Node(port, workdir / str(port)))
        cluster = cls(nodes, workdir, replicas, binary, cli, masters)
        try:
            cluster._create()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _create(self) -> None:
        for node in self.nodes:
            node.start(self.binary)
        for node in self.nodes:
            wait_until(node.answers, 10, f"redis-server on port {node.port} answering PING")
        create = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({create.returncode}): "
                f"{create.stdout.decode(errors='replace')[-800:]}"
            )
        self.wait_ok(30)

    @property
    def uri(self) -> str:
        return "redis+cluster://" + ",".join(node.address for node in self.nodes)

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def masters(self) -> list[int]:
        """Ports of the nodes that are masters now (a fail-over changes them)."""
        return [
            node.port
            for node in self.nodes
            if node.process is not None
            and node.process.poll() is None
            and _info(node.port, "replication").get("role") == "master"
        ]

    def _settled(self) -> bool:
        running = [n for n in self.nodes if n.process is not None and n.process.poll() is None]
        for node in running:
            info = _info(node.port, "cluster")
            if info.get("cluster_state") != "ok":
                return False
            if info.get("cluster_known_nodes") != str(len(self.nodes)):
                return False
        masters = self.masters()
        if len(masters) != self.masters_wanted:
            return False
        replicas = [node.port for node in running if node.port not in masters]
        return all(
            _info(port, "replication").get("master_link_status") == "up" for port in replicas
        )

    def wait_ok(self, seconds: float = 30) -> None:
        """Until every running node says ``cluster_state:ok``, knows every node, there are
        as many masters as asked for and every replica is linked to its master."""
        wait_until(self._settled, seconds, f"cluster_state:ok on every node of {self.uri}")

    def kill(self, port: int) -> None:
        """SIGKILL one node (a fail-over test then waits for its replica to take over)."""
        self.node(port).kill()

    def replica_of(self, port: int) -> int:
        """Port of a running replica of the master on ``port``."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            if _info(node.port, "replication").get("master_port") == str(port):
                return node.port
        raise LookupError(f"No running node replicates the master on port {port}.")

    def hold_failover(self, port: int, held: bool) -> None:
        """``cluster-replica-no-failover`` on the replica on ``port``: while held it does not
        take over its failed master, so the cluster has no master for those slots (a test's
        outage lasts as long as it needs); released, it takes over within a few seconds."""
        client = redis.Redis(port=port, socket_timeout=5)
        try:
            client.config_set("cluster-replica-no-failover", "yes" if held else "no")
        finally:
            client.close()

    def cluster_state(self, port: int) -> str:
        """``cluster_state`` as the node on ``port`` reports it (``ok``, ``fail``), or ``""``."""
        return _info(port, "cluster").get("cluster_state", "")

    def restart(self, port: int) -> None:
        """Start a killed node again; it rejoins from its ``nodes.conf`` (as a replica when
        its replica took over)."""
        node = self.node(port)
        node.start(self.binary)
        wait_until(node.answers, 10, f"redis-server on port {port} answering PING again")

    def flushall(self) -> None:
        for port in self.masters():
            client = redis.Redis(port=port, socket_timeout=5)
            try:
                client.flushall()
            finally:
                client.close()

    def flush_scripts(self) -> None:
        """SCRIPT FLUSH on every master: as fresh as a new cluster for a script-loading client."""
        for port in self.masters():
            client = redis.Redis(port=port, socket_timeout=5)
            try:
                client.script_flush()
            finally:
                client.close()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
