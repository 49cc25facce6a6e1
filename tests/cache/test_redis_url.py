"""`cache.redis_url`: every accepted shape parses to its target; every other is a clear error."""

from __future__ import annotations

import pytest

from idrserve.cache.redis_url import RedisTarget, parse_redis_url
from idrserve.cache.tiered import redact_url
from idrserve.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", RedisTarget("single", "redis://127.0.0.1:6379/0")),
        ("rediss://h:1/2", RedisTarget("single", "rediss://h:1/2", ssl=True)),
        ("unix:///run/redis.sock", RedisTarget("single", "unix:///run/redis.sock")),
        (
            "redis+cluster://a:7000,b:7001,[::1]:7002",
            RedisTarget("cluster", "", nodes=(("a", 7000), ("b", 7001), ("::1", 7002))),
        ),
        (
            "rediss+cluster://u:p%40ss@a,b:7001/0",
            RedisTarget(
                "cluster", "", ssl=True, nodes=(("a", 6379), ("b", 7001)), username="u",
                password="p@ss",
            ),
        ),
        (
            "redis+sentinel://:pw@s1,s2:26380/idr-cache/3?sentinel_password=sp",
            RedisTarget(
                "sentinel", "", nodes=(("s1", 26379), ("s2", 26380)), service="idr-cache", db=3,
                password="pw", sentinel_password="sp",
            ),
        ),
        (
            "REDISS+SENTINEL://s1:1/svc",
            RedisTarget("sentinel", "", ssl=True, nodes=(("s1", 1),), service="svc"),
        ),
    ],
)  # fmt: skip
def test_accepted_urls(url: str, expected: RedisTarget) -> None:
    got = parse_redis_url(url)
    assert (got.mode, got.url) == (expected.mode, url)
    for field in ("ssl", "nodes", "service", "db", "username", "password", "sentinel_password"):
        assert getattr(got, field) == getattr(expected, field), field


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("127.0.0.1:6379", "no scheme"),
        ("memcached://h", "unknown Redis URL scheme"),
        ("redis+sentinl://h/s", "unknown Redis URL scheme"),
        ("redis+cluster://", "at least one host"),
        ("redis+cluster://a:1/3", "only database 0"),
        ("redis+cluster://a:1?x=1", "unsupported"),
        ("redis+cluster://a:99999", "out of range"),
        ("redis+cluster://a:port", "port must be a number"),
        ("redis+sentinel://a:1", "needs /SERVICE"),
        ("redis+sentinel://a:1/svc/x", "database must be a number"),
        ("redis+sentinel://a:1/svc/0/extra", "needs /SERVICE"),
        ("redis+sentinel://a:1/svc?pasword=x", "unsupported"),
    ],
)
def test_rejected_urls(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_redis_url(url)


def test_a_bad_url_fails_at_settings_load() -> None:
    with pytest.raises(SettingsError, match="redis_url"):
        load_settings({"cache": {"redis_url": "redis+cluster://"}})


def test_prefix_cannot_hold_hash_tag_braces() -> None:
    with pytest.raises(SettingsError, match="redis_prefix"):
        load_settings({"cache": {"redis_prefix": "idr{x}:"}})


def test_passwords_are_redacted_in_every_scheme() -> None:
    assert redact_url("redis+cluster://u:secret@a:1,b:2") == "redis+cluster://u:***@a:1,b:2"
    assert redact_url("redis+sentinel://:secret@s:1/svc") == "redis+sentinel://:***@s:1/svc"
