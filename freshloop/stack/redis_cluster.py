"""The local Redis Cluster (``FRESHLOOP_REDIS_LAYOUT=cluster``): three primaries on loopback.

Each primary is a ``Redis`` service of its own (its folder, append-only file, ACL file with the
same users, pid file), started with cluster mode on; the first is named ``redis`` and the others
``redis-2``, ``redis-3`` (``freshloop stack up|down|logs redis`` means all of them). Once every
primary answers, the last one started forms the cluster: the nodes meet, the 16384 slots are
split evenly between them in port order, and ``stack up`` returns only when every node reports
``cluster_state:ok``. A node restarted later rejoins from its ``nodes.conf`` (its identity and
slots), so forming is a no-op then. No replicas: like the single Redis, each primary keeps its
data in its append-only file (docs/redis-cluster.md).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from freshloop.core.exceptions import StackError
from freshloop.core.settings import Settings
from freshloop.stack.redis_acl import admin_client
from freshloop.stack.services import Redis

__all__ = [
    "CLUSTER_SLOTS",
    "RedisClusterNode",
    "cluster_nodes",
    "cluster_services",
    "form_cluster",
    "free_cluster_base",
    "private_cluster",
    "slot_ranges",
]

CLUSTER_SLOTS = 16384
_BUS_OFFSET = 10000  # a node's cluster bus listens this far above its port
_FORM_TIMEOUT_S = 30.0


def slot_ranges(n: int) -> list[tuple[int, int]]:
    """The slots split into ``n`` contiguous ranges (first, last), as even as can be."""
    if n < 1:
        msg = f"a Redis Cluster needs at least one primary, got {n}"
        raise StackError(msg)
    bounds = [CLUSTER_SLOTS * i // n for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(n)]


@dataclass
class RedisClusterNode(Redis):
    """One primary of the local cluster; ``ports`` are all the primaries', in order."""

    ports: tuple[int, ...] = field(default=())

    @property
    def group(self) -> str:
        return "redis"

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",  # in --dir
            "--cluster-node-timeout",
            "5000",
            # a node that lost its peers answers its own slots: one primary down stops only
            # the namespaces' shards it holds, not the whole cluster
            "--cluster-require-full-coverage",
            "no",
        ]

    def after_start(self) -> None:
        super().after_start()
        if all(_answers(self, port) for port in self.ports):
            form_cluster(self, self.ports)

    def reconcile(self, echo: Callable[[str], None] | None = None) -> None:
        super().reconcile(echo)
        if self.port == self.ports[-1]:
            form_cluster(self, self.ports)


def _client(node: Redis, port: int) -> redis.Redis:
    return admin_client(node.settings, node.host, port)


def _answers(node: Redis, port: int) -> bool:
    try:
        _client(node, port).close()
    except (redis.RedisError, OSError):
        return False
    return True


def _info(client: redis.Redis) -> dict[str, str]:
    text = client.execute_command("CLUSTER", "INFO")
    text = text.decode() if isinstance(text, bytes) else str(text)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def cluster_nodes(settings_node: Redis, port: int) -> dict[str, tuple[int, list[str]]]:
    """What the node on ``port`` knows: node id -> (port, its slot ranges as text)."""
    client = _client(settings_node, port)
    try:
        raw = client.execute_command("CLUSTER", "NODES")
    finally:
        client.close()
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    out: dict[str, tuple[int, list[str]]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@", 1)[0]
        out[parts[0]] = (int(address.rsplit(":", 1)[1]), parts[8:])
    return out


def form_cluster(node: Redis, ports: tuple[int, ...], timeout: float = _FORM_TIMEOUT_S) -> None:
    """Make the primaries on ``ports`` one cluster holding every slot (idempotent): each meets
    the first, each without slots takes its even share (only while no slot is assigned
    anywhere: a cluster formed before is never re-split), then wait for ``cluster_state:ok``."""
    clients = [_client(node, port) for port in ports]
    try:
        if all(_info(c).get("cluster_state") == "ok" for c in clients):
            return
        first = clients[0]
        for port in ports[1:]:
            first.execute_command("CLUSTER", "MEET", node.host, port, port + _BUS_OFFSET)
        assigned = [int(_info(c).get("cluster_slots_assigned", "0")) for c in clients]
        if not any(assigned):
            for client, (lo, hi) in zip(clients, slot_ranges(len(ports)), strict=True):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [_info(c) for c in clients]
            if all(
                i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == str(len(ports))
                for i in infos
            ):
                return
            time.sleep(0.1)
        states = ", ".join(
            f"{port}: {i.get('cluster_state')} ({i.get('cluster_slots_assigned')} slots, "
            f"{i.get('cluster_known_nodes')} nodes known)"
            for port, i in zip(ports, infos, strict=True)
        )
        msg = (
            f"the Redis Cluster on ports {', '.join(map(str, ports))} did not become ready in "
            f"{timeout:.0f}s ({states}); see the redis logs, or stop the stack and remove the "
            "redis-cluster folder under FRESHLOOP_HOME to form it anew (its data goes too)"
        )
        raise StackError(msg)
    finally:
        for client in clients:
            client.close()


def cluster_services(settings: Settings, home: Path) -> list[Redis]:
    """The primaries as services: ``redis`` (the first port), ``redis-2``, ``redis-3``..."""
    ports = settings.redis_cluster_port_list
    root = home / "redis-cluster"
    return [
        RedisClusterNode(
            "redis" if i == 0 else f"redis-{i + 1}",
            port,
            settings,
            root / str(port),
            extra_ports=(port + _BUS_OFFSET,),
            ports=ports,
        )
        for i, port in enumerate(ports)
    ]


def free_cluster_base(primaries: int = 3) -> int | None:
    """A loopback port p with p .. p+primaries-1 and their cluster bus ports free, or None."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + _BUS_OFFSET + primaries > 65535:
            continue
        ports = [base + i for i in range(primaries)]
        ports += [port + _BUS_OFFSET for port in ports]
        free = True
        for port in ports:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return base
    return None


@contextmanager
def private_cluster(settings: Settings, base: int | None = None) -> Iterator[Settings]:
    """A Redis Cluster of three primaries of its own, on free loopback ports in a temporary
    folder, for as long as the block runs: ``settings`` with ``redis_layout=cluster`` and
    ``redis_url`` naming its first primary (the same users and passwords). The tests and the
    scaling bench use it when the stack's Redis is one Redis; it is stopped and its folder
    removed at the end, whatever happens in the block. ``base``: its first port (the next two
    and their bus ports must be free too; ``free_cluster_base`` finds one)."""
    from freshloop.stack.supervisor import Stack

    if shutil.which("redis-server") is None:
        msg = "redis-server is not installed: run 'make setup' (it installs it)"
        raise StackError(msg)
    base = base or free_cluster_base(3)
    if base is None:
        msg = "no three consecutive free loopback ports (with their bus ports) for a Redis Cluster"
        raise StackError(msg)
    home = Path(tempfile.mkdtemp(prefix="freshloop-cluster-"))
    cluster = settings.model_copy(
        update={
            "home": home,
            "redis_layout": "cluster",
            "redis_url": f"redis://127.0.0.1:{base}/0",
            "redis_read_url": None,
            "redis_cluster_ports": "",
        }
    )
    stack = Stack(cluster)
    stack.setup = lambda for_tests=False: None  # type: ignore[method-assign] # only redis-server
    try:
        stack.up(["redis"])
        yield cluster
    finally:
        stack.down(["redis"])
        shutil.rmtree(home, ignore_errors=True)
