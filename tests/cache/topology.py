"""A real Redis Cluster (3 primaries + 3 replicas) and a real Sentinel set, on loopback.

Both are built from the same redis-server binary and `cache/redis.conf` as the single-server
tests, with timings shortened (node timeout and sentinel down-after 1 s) so that a failover
fits in a few seconds. `redis-cli` (Debian's redis-tools, which redis-server depends on) creates
the cluster, as an operator would.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

from tests.cache.conftest import REDIS_CONF, RedisServer, redis_executable

NODE_TIMEOUT_MS = 1000
SERVICE = "idrcache"


def free_port_pair() -> int:
    """A port P with P and P + 10000 (a cluster node's bus port) both free on loopback."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def cli(*args: str, timeout: float = 30) -> str:
    done = subprocess.run(
        [redis_executable("redis-cli"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def wait_for(check: object, what: str, timeout_s: float = 30) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (RuntimeError, OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def node(workdir: Path, port: int | None = None, extra: tuple[str, ...] = ()) -> RedisServer:
    """A redis-server with its own copy of `cache/redis.conf`: a sentinel failover rewrites
    the promoted server's config file (CONFIG REWRITE), which must never be the shipped one."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "redis.conf"
    conf.write_bytes(REDIS_CONF.read_bytes())
    return RedisServer(redis_executable(), workdir, port, extra, conf=conf)


class RedisClusterNodes:
    """Six cluster-enabled redis-servers joined by `redis-cli --cluster create`."""

    def __init__(self, workdir: Path, size: int = 6) -> None:
        self.nodes: list[RedisServer] = []
        for i in range(size):
            port = free_port_pair()
            node_dir = workdir / f"node{i}"
            extra = (
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # A replica may always take over (it has just synced; this is a cache).
                "--cluster-replica-validity-factor", "0",
                "--cluster-require-full-coverage", "no",
            )  # fmt: skip
            self.nodes.append(node(node_dir, port, extra))

    @property
    def url(self) -> str:
        # Two seed nodes: the client learns the rest from them.
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        cli("--cluster", "create", *addrs, "--cluster-replicas", "1", "--cluster-yes")
        wait_for(self.healthy, "cluster_state:ok on every node")

    def healthy(self) -> bool:
        alive = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        for node in alive:
            info = cli("-p", str(node.port), "cluster", "info")
            if "cluster_state:ok" not in info:
                return False
        roles = self.roles()
        return sum(1 for r in roles.values() if r == "master") == 3

    def roles(self) -> dict[int, str]:
        """port → "master" / "slave" / "fail" as the cluster sees it (from a live node)."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            out: dict[int, str] = {}
            for line in cli("-p", str(node.port), "cluster", "nodes").splitlines():
                fields = line.split()
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                flags = fields[2].split(",")
                out[port] = (
                    "fail" if "fail" in flags else ("master" if "master" in flags else "slave")
                )
            return out
        raise RuntimeError("no live cluster node")

    def replica_of(self, primary: RedisServer) -> RedisServer:
        for line in cli("-p", str(primary.port), "cluster", "nodes").splitlines():
            fields = line.split()
            if "myself" in fields[2]:
                my_id = fields[0]
        for line in cli("-p", str(primary.port), "cluster", "nodes").splitlines():
            fields = line.split()
            if fields[3] == my_id:
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no replica of {primary.port}")

    def primaries(self) -> list[RedisServer]:
        roles = self.roles()
        return [n for n in self.nodes if roles.get(n.port) == "master"]

    def primary_and_replica(self) -> tuple[RedisServer, RedisServer]:
        """A primary to kill, and the replica that should take over its slots."""
        primary = self.primaries()[0]
        return primary, self.replica_of(primary)

    def promoted(self, killed: RedisServer, replica: RedisServer) -> bool:
        """`replica` serves as a primary and the cluster has marked `killed` as failed."""
        roles = self.roles()
        return roles.get(replica.port) == "master" and roles.get(killed.port) == "fail"

    def owner(self, slot: int) -> RedisServer:
        """The primary serving `slot`, as the cluster sees it."""
        for line in cli("-p", str(self.primaries()[0].port), "cluster", "nodes").splitlines():
            fields = line.split()
            for part in fields[8:]:
                lo, _, hi = part.partition("-")
                if not part.startswith("[") and int(lo) <= slot <= int(hi or lo):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"slot {slot} has no primary")

    def start_migration(self, slot: int, src: RedisServer, dst: RedisServer) -> None:
        """Mark `slot` migrating from `src` to `dst` and MIGRATE its keys, as
        `redis-cli --cluster reshard` does: `src` then answers ASK for them."""
        cli("-p", str(dst.port), "cluster", "setslot", str(slot), "importing", node_id(src))
        cli("-p", str(src.port), "cluster", "setslot", str(slot), "migrating", node_id(dst))
        keys = cli("-p", str(src.port), "cluster", "getkeysinslot", str(slot), "1000").split()
        assert keys, f"no keys in slot {slot}"
        cli("-p", str(src.port), "migrate", "127.0.0.1", str(dst.port), "", "0", "5000",
            "keys", *keys)  # fmt: skip

    def finish_migration(self, slot: int, dst: RedisServer) -> None:
        """Give `slot` to `dst` on every primary: the old owner then answers MOVED."""
        for primary in [dst, *(p for p in self.primaries() if p is not dst)]:
            cli("-p", str(primary.port), "cluster", "setslot", str(slot), "node", node_id(dst))

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def node_id(server: RedisServer) -> str:
    return cli("-p", str(server.port), "cluster", "myid").strip()


SENTINEL_CONF = """port {port}
bind 127.0.0.1
daemonize no
dir {dir}
sentinel monitor {service} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {service} {down_ms}
sentinel failover-timeout {service} 5000
sentinel parallel-syncs {service} 1
"""


class RedisSentinelSet:
    """A primary, one replica and three sentinels (quorum 2) watching them."""

    def __init__(self, workdir: Path, sentinels: int = 3) -> None:
        exe = redis_executable()
        self.primary = node(workdir / "primary")
        self.replica = node(
            workdir / "replica", extra=("--replicaof", "127.0.0.1", str(self.primary.port))
        )
        self.sentinels: list[RedisServer] = []
        for i in range(sentinels):
            sdir = workdir / f"sentinel{i}"
            sdir.mkdir()
            port = free_port_pair()
            conf = sdir / "sentinel.conf"
            conf.write_text(
                SENTINEL_CONF.format(
                    port=port, dir=sdir, service=SERVICE, primary=self.primary.port,
                    down_ms=NODE_TIMEOUT_MS,
                )
            )  # fmt: skip
            self.sentinels.append(RedisServer(exe, sdir, port, ("--sentinel",), conf=conf))

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        for s in self.sentinels:
            s.start()
        wait_for(
            lambda: (
                "master_link_status:up" in cli("-p", str(self.replica.port), "info", "replication")
            ),
            "the replica to sync",
        )
        wait_for(lambda: self.known_replicas() >= 1, "the sentinels to see the replica")
        # A failover needs a majority of sentinels that know each other (quorum and leader).
        others = len(self.sentinels) - 1
        wait_for(
            lambda: all(self.known_sentinels(s) >= others for s in self.sentinels),
            "the sentinels to see each other",
        )

    def known_sentinels(self, sentinel: RedisServer) -> int:
        out = cli("-p", str(sentinel.port), "sentinel", "sentinels", SERVICE)
        return sum(1 for line in out.splitlines() if line == "name")

    def known_replicas(self) -> int:
        out = cli("-p", str(self.sentinels[0].port), "sentinel", "replicas", SERVICE)
        return sum(1 for line in out.splitlines() if line == "name")

    def current_primary_port(self) -> int:
        out = cli("-p", str(self.sentinels[0].port), "sentinel", "get-master-addr-by-name", SERVICE)
        return int(out.split()[1])

    def primary_and_replica(self) -> tuple[RedisServer, RedisServer]:
        """The primary to kill, and the replica the sentinels should promote."""
        return self.primary, self.replica

    def promoted(self, killed: RedisServer, replica: RedisServer) -> bool:
        """The sentinels name `replica` as the service's primary (`killed` is not asked)."""
        return self.current_primary_port() == replica.port

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.kill()
