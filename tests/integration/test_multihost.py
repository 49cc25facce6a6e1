"""Three idrserve hosts behind the shipped nginx, reading S3, sharing a 3+3 Redis Cluster
and then a Sentinel-managed primary and replica (three sentinels).

On both: one cold tile asked of every host at once is rendered once in all; a purge made with
`idrserve cache purge` reaches every host within `cache.generation_ttl_s`; a Redis primary
SIGKILLed under load costs no client request and its replica is promoted. On the cluster
also a host SIGKILLed under load (nginx's retry, the same whatever the Redis). The kills run
last, as they change the set-up for what follows.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.cache.topology import wait_for
from tests.integration.multihost import (
    GENERATION_TTL_S,
    IMAGE,
    Host,
    MultiHost,
    run_load,
    tile_urls,
)
from tests.integration.test_nginx import nginx_binary


@pytest.fixture(scope="module", params=["cluster", "sentinel"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MultiHost]:
    nginx_binary()
    stack = MultiHost(tmp_path_factory.mktemp(f"multihost-{request.param}"), redis=request.param)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def ask_all_at_once(hosts: list[Host], path: str) -> list[str]:
    """The same URL from every host, released together; returns each answer's X-Cache."""
    barrier = threading.Barrier(len(hosts))

    def one(host: Host) -> str:
        barrier.wait()
        answer = host.get(path)
        assert answer.status == 200, (host.addr, answer.status, answer.body[:200])
        return answer.headers["X-Cache"]

    with ThreadPoolExecutor(len(hosts)) as pool:
        return list(pool.map(one, hosts))


def test_hosts_are_distinct_addresses(stack: MultiHost) -> None:
    # 127.0.0.2-4 bind on Linux; elsewhere the fallback (one address, three ports) still
    # exercises everything below, but this test says so by failing.
    assert stack.distinct_addresses, [h.addr for h in stack.hosts]


def test_cold_tile_is_rendered_once_across_hosts(stack: MultiHost) -> None:
    for n, path in enumerate(tile_urls(5, salt=1)):
        before = stack.renders()
        tiers = ask_all_at_once(stack.hosts, path)
        assert stack.renders() - before == 1, (n, tiers)
        counts = Counter(tiers)
        assert counts["miss"] == 1, tiers  # the one host that rendered
        assert counts["miss"] + counts["coalesced"] + counts["redis"] == 3, tiers


def test_purge_reaches_every_host_within_generation_ttl(stack: MultiHost) -> None:
    path = tile_urls(1, salt=2)[0]
    first, *others = stack.hosts
    assert first.get(path).headers["X-Cache"] == "miss"
    for host in others:  # now in every host's memory tier
        assert host.get(path).headers["X-Cache"] in ("redis", "coalesced")
        assert host.get(path).headers["X-Cache"] == "memory"
    out = stack.purge(IMAGE)
    assert f"image {IMAGE}: cache generation now" in out
    time.sleep(GENERATION_TTL_S + 0.2)
    before = stack.renders()
    assert first.get(path).headers["X-Cache"] == "miss"  # a new generation: rendered again
    for host in others:
        # Not "memory": the old entry is unreachable on every host; the new one is shared
        # (read from Redis, or waited for while the first host's write held the lock).
        assert host.get(path).headers["X-Cache"] in ("redis", "coalesced")
    assert stack.renders() - before == 1


@pytest.mark.parametrize("stack", ["cluster"], indirect=True)  # nginx's part: once is enough
def test_host_killed_under_load_fails_no_request(stack: MultiHost) -> None:
    victim = stack.hosts[-1]
    started = victim.metric("idrserve_cache_renders_total")
    halfway = threading.Event()
    result: list[object] = []
    urls = tile_urls(300, salt=3)
    load = threading.Thread(
        target=lambda: result.append(
            run_load("127.0.0.1", stack.nginx_port, urls, 6, progress=halfway, progress_after=100)
        )
    )
    load.start()
    assert halfway.wait(60)
    assert victim.metric("idrserve_cache_renders_total") > started  # it was taking load
    stack.kill_host(victim)
    load.join(120)
    (res,) = result
    assert res.failed == [], res.failed[:5]  # type: ignore[attr-defined]
    assert res.ok == len(urls)  # type: ignore[attr-defined]


def test_redis_primary_killed_under_load_fails_no_request(stack: MultiHost) -> None:
    redis = stack.replicated
    assert redis is not None
    live = [h for h in stack.hosts if h.alive]
    victim, replica = redis.primary_and_replica()
    stop = threading.Event()
    warmed = threading.Event()
    result: list[object] = []
    urls = tile_urls(3000, salt=4)
    load = threading.Thread(
        target=lambda: result.append(
            run_load("127.0.0.1", stack.nginx_port, urls, 6, stop, warmed, progress_after=50)
        )
    )
    load.start()
    try:
        assert warmed.wait(60)
        victim.kill()
        wait_for(lambda: redis.promoted(victim, replica), "the replica's promotion")
        # The shared tier serves again on every live host: a tile rendered by one host is
        # a Redis hit on the other (on a cluster, for keys in every slot range: 30 keys,
        # 3 primaries).
        attempts = iter(range(5, 1000))

        def back_in_service() -> bool:
            probe = tile_urls(30, salt=next(attempts))  # fresh keys every attempt
            for path in probe:
                live[0].get(path)
            time.sleep(0.3)  # background writes
            shared = ("redis", "coalesced")
            return all(live[1].get(p).headers["X-Cache"] in shared for p in probe)

        wait_for(back_in_service, "the shared tier to serve again", timeout_s=30)
    finally:
        stop.set()
        load.join(60)
    (res,) = result
    assert res.failed == [], res.failed[:5]  # type: ignore[attr-defined]
    assert res.ok > 50  # type: ignore[attr-defined]
    assert max(h.metric("idrserve_cache_breaker_open") for h in live) == 0
    # The hosts did feel the outage (errors or calls skipped by an open breaker), and absorbed it.
    felt = sum(
        h.metric('idrserve_cache_requests_total{result="error",tier="redis"}')
        + h.metric('idrserve_cache_requests_total{result="skipped",tier="redis"}')
        + h.metric('idrserve_cache_writes_total{result="error",tier="redis"}')
        for h in live
    )
    assert felt > 0
