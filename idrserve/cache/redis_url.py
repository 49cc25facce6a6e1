"""`cache.redis_url`: one Redis, a Redis Cluster or a Sentinel-managed primary, and its client.

The shared tier only needs somewhere to GET/SET/EVAL a few keys, so the deployment choice is
a URL scheme rather than a settings group:

* `redis://[user:pass@]host:port/db` (or `rediss://`, `unix://`): one server, as before;
* `redis+cluster://[user:pass@]host:port[,host:port…]`: any reachable nodes of a cluster
  (db 0 only); the client learns the slot map from them and follows MOVED/ASK and failovers;
* `redis+sentinel://[user:pass@]host:port[,host:port…]/SERVICE[/db]`: sentinels that name
  the primary of SERVICE; the credentials are the data nodes', `?sentinel_password=` the
  sentinels' own.

`rediss+cluster` and `rediss+sentinel` use TLS to every node (and to the sentinels). The URL is
checked when settings load, so a typo fails at start-up with one line, not at the first tile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from idrserve.settings import CacheSettings

Mode = Literal["single", "cluster", "sentinel"]
SINGLE_SCHEMES = frozenset({"redis", "rediss", "unix"})
DEFAULT_PORT = {"cluster": 6379, "sentinel": 26379}
CLIENT_NAME = "idrserve-cache"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a `cache.redis_url` names, parsed once."""

    mode: Mode
    url: str
    ssl: bool = False
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def parse_redis_url(url: str) -> RedisTarget:
    """The target of `url`; ValueError with the expected shape when it is not one."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a Redis URL (no scheme://): {_shape_hint()}")
    scheme = scheme.lower()
    if scheme in SINGLE_SCHEMES:
        return RedisTarget("single", url, ssl=scheme == "rediss")
    base, plus, kind = scheme.partition("+")
    if not plus or base not in ("redis", "rediss") or kind not in ("cluster", "sentinel"):
        raise ValueError(f"unknown Redis URL scheme {scheme!r}: {_shape_hint()}")
    mode: Mode = "cluster" if kind == "cluster" else "sentinel"
    # urlsplit cannot read a comma-separated host list as a netloc port; split it by hand.
    parts = urlsplit("x://" + rest)
    netloc = parts.netloc
    creds, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = creds.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_host_port(h, DEFAULT_PORT[mode]) for h in hosts.split(",") if h.strip())
    if not nodes:
        raise ValueError(f"{scheme}:// needs at least one host:port")
    path = [p for p in parts.path.split("/") if p]
    query = parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown or (mode == "cluster" and query):
        raise ValueError(f"unsupported Redis URL parameter(s): {', '.join(sorted(query))}")
    if mode == "cluster":
        if path not in ([], ["0"]):
            raise ValueError("a Redis Cluster has only database 0: drop the path")
        return RedisTarget(mode, url, base == "rediss", nodes, None, 0, username, password)
    if not path or len(path) > 2:
        raise ValueError("redis+sentinel:// needs /SERVICE or /SERVICE/DB after the hosts")
    db = _int(path[1], "database") if len(path) == 2 else 0
    sentinel_password = query.get("sentinel_password", [None])[0]
    return RedisTarget(
        mode, url, base == "rediss", nodes, unquote(path[0]), db, username, password,
        sentinel_password,
    )  # fmt: skip


def _shape_hint() -> str:
    return (
        "expected redis://host:port/db, redis+cluster://host:port[,host:port…] or "
        "redis+sentinel://host:port[,host:port…]/SERVICE[/db] (rediss… for TLS)"
    )


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [IPv6]:port
        host, _, tail = text[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"no host in {text!r}")
    port = _int(port_text, "port") if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def _int(text: str, what: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{what} must be a number, not {text!r}")
    return int(text)


def connect(settings: CacheSettings) -> tuple[Redis | RedisCluster, Mode]:
    """A client for `settings.redis_url` that never waits longer than `redis_timeout_s` per
    connect or reply, with at most `redis_pool_size` connections per server.

    Only the single-server pool blocks for a free connection; the cluster and sentinel pools
    refuse instead, so the caller bounds its own concurrency (`RedisTier`).
    """
    assert settings.redis_url is not None
    target = parse_redis_url(settings.redis_url)
    timeout = settings.redis_timeout_s
    # One immediate retry on a dropped connection (a restarted Redis leaves every pooled
    # connection dead); a timeout is never retried.
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    if target.mode == "single":
        pool = BlockingConnectionPool.from_url(
            target.url,
            max_connections=settings.redis_pool_size,
            timeout=timeout,  # wait for a free connection
            retry=retry,
            client_name=CLIENT_NAME,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        return Redis.from_pool(pool), "single"
    if target.mode == "cluster":
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            # Serve the slots that have a primary while a failover is under way.
            require_full_coverage=False,
            max_connections=settings.redis_pool_size,
            retry=retry,
            username=target.username,
            password=target.password,
            ssl=target.ssl,
            client_name=CLIENT_NAME,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        return cluster, "cluster"
    sentinel_kwargs = {
        "password": target.sentinel_password,
        "ssl": target.ssl,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    sentinel = Sentinel(
        list(target.nodes),
        sentinel_kwargs=sentinel_kwargs,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    assert target.service is not None
    client: Redis = sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.ssl,
        max_connections=settings.redis_pool_size,
        retry=retry,
        client_name=CLIENT_NAME,
    )
    return client, "sentinel"
