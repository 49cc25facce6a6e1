"""Settings precedence: CLI overrides > IDRSERVE_* environment > TOML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from idrserve.settings import load_settings


def test_defaults_suit_a_laptop() -> None:
    s = load_settings()
    assert s.server.host == "127.0.0.1"
    assert s.server.port == 8080
    assert s.limits.max_tile_length == 2048
    assert s.limits.max_active_channels == 10
    assert s.server.cache_control.startswith("public")


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "idrserve.toml"
    toml.write_text(
        "[server]\nport = 9001\nhost = '0.0.0.0'\n\n[limits]\nmax_tile_length = 512\n"
        "max_active_channels = 4\n"
    )
    from_file = load_settings(config_file=toml)
    assert (from_file.server.port, from_file.server.host) == (9001, "0.0.0.0")
    assert from_file.limits.max_tile_length == 512

    monkeypatch.setenv("IDRSERVE_LIMITS__MAX_TILE_LENGTH", "1024")
    monkeypatch.setenv("IDRSERVE_SERVER__PORT", "9002")
    env = load_settings(config_file=toml)
    assert env.limits.max_tile_length == 1024  # env beats file
    assert env.limits.max_active_channels == 4  # file still applies where env is silent
    assert env.server.port == 9002

    cli = load_settings({"server": {"port": 9003}}, config_file=toml)
    assert cli.server.port == 9003  # CLI beats env
    assert cli.server.host == "0.0.0.0"  # the rest of the group is kept
    assert cli.limits.max_tile_length == 1024


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[source]\nzarr_root = '/data/zarr'\n")
    monkeypatch.setenv("IDRSERVE_CONFIG", str(toml))
    assert load_settings().source.zarr_root == "/data/zarr"


@pytest.mark.parametrize(
    ("env", "value"),
    [("IDRSERVE_SERVER__PORT", "70000"), ("IDRSERVE_LIMITS__MAX_TILE_LENGTH", "abc")],
)
def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch, env: str, value: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError):
        load_settings()


def test_unknown_keys_in_file_are_rejected(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("[server]\nprot = 1\n")
    with pytest.raises(ValidationError):
        load_settings(config_file=toml)


def test_cache_flags_and_flat_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from idrserve.cli import _overrides, build_parser

    args = build_parser().parse_args(
        ["serve", "--zarr-root", "/d", "--redis-url", "redis://r:1/0", "--cache-dir", "/c",
         "--cache-dir-max-bytes", "1000"]
    )  # fmt: skip
    s = load_settings(_overrides(args))
    assert (s.cache.redis_url, str(s.cache.dir), s.cache.dir_max_bytes) == (
        "redis://r:1/0",
        "/c",
        1000,
    )
    monkeypatch.setenv("IDRSERVE_REDIS_URL", "redis://env:2/0")
    monkeypatch.setenv("IDRSERVE_CACHE_DIR", "/env-cache")
    monkeypatch.setenv("IDRSERVE_CACHE_DIR_MAX_BYTES", "2000")
    env = load_settings()
    assert (env.cache.redis_url, str(env.cache.dir), env.cache.dir_max_bytes) == (
        "redis://env:2/0", "/env-cache", 2000,
    )  # fmt: skip
    assert load_settings(_overrides(args)).cache.redis_url == "redis://r:1/0"  # flags win
