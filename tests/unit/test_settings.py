"""Settings precedence: CLI overrides > IDRSERVE_* environment > TOML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from idrserve.settings import SettingsError, load_settings


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
    with pytest.raises(SettingsError, match=f"^{env}={value}: expected "):
        load_settings()


def test_unknown_keys_in_file_are_rejected(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("[server]\nprot = 1\n")
    with pytest.raises(SettingsError) as err:
        load_settings(config_file=toml)
    assert str(err.value) == f"unknown setting server.prot in {toml} (did you mean server.port?)"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("IDRSERVE_LIMITS__MAX_TILE_LENGHT", "(did you mean IDRSERVE_LIMITS__MAX_TILE_LENGTH?)"),
        ("IDRSERVE_SERVER_PORT", "(did you mean IDRSERVE_SERVER__PORT?)"),  # one underscore
        ("IDRSERVE_REDIS_ULR", "(did you mean IDRSERVE_REDIS_URL?)"),
        ("IDRSERVE_ZARR_ROOT", "(did you mean IDRSERVE_SOURCE__ZARR_ROOT?)"),  # group left out
        ("IDRSERVE_PORT", "(did you mean IDRSERVE_SERVER__PORT or IDRSERVE_OMERO__PORT?)"),
        ("IDRSERVE_OMERO_PASSWORD", "(did you mean IDRSERVE_OMERO__PASSWORD?)"),
        ("IDRSERVE_SEVRER__PORT", "(did you mean IDRSERVE_SERVER__PORT?)"),
        ("IDRSERVE_FOO__BAR", ": expected IDRSERVE_<GROUP>__<KEY> with GROUP one of server, "),
        ("IDRSERVE_LIMITS__FOO", ": expected IDRSERVE_LIMITS__<KEY> with a key of [limits]"),
    ],
)
def test_unknown_environment_variables_are_named(
    monkeypatch: pytest.MonkeyPatch, name: str, message: str
) -> None:
    """pydantic-settings ignores an unknown group (IDRSERVE_FOO__BAR): load_settings does not."""
    monkeypatch.setenv(name, "1")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith(f"unknown setting {name} in the environment")
    assert message in str(err.value)


def test_tool_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The build's, scripts' and tests' own IDRSERVE_* knobs are left alone."""
    for name in ("IDRSERVE_NPM_REGISTRY", "IDRSERVE_OMERO_VENV", "IDRSERVE_TEST_OMERO_HOST"):
        monkeypatch.setenv(name, "x")
    assert load_settings().server.port == 8080


def test_bad_or_missing_config_files_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nport = 1\n")
    with pytest.raises(SettingsError, match=r"^config file .*broken.toml is not valid TOML \("):
        load_settings(config_file=broken)
    with pytest.raises(SettingsError, match=r"^config file .*nope.toml \(from --config\) does"):
        load_settings(config_file=tmp_path / "nope.toml")
    monkeypatch.setenv("IDRSERVE_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError, match=r"\(from IDRSERVE_CONFIG\) does not exist"):
        load_settings()


def test_errors_name_where_the_value_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[server]\nport = 'x'\n[limits]\nmax_tile_length = 4\n")
    with pytest.raises(SettingsError) as err:
        load_settings(config_file=toml)
    assert str(err.value).startswith(f'server.port = "x" in {toml}: expected a valid integer')
    assert str(err.value).endswith("(and 1 more)")
    with pytest.raises(SettingsError, match=r"^--port 70000 \(server\.port\): expected less "):
        load_settings({"server": {"port": 70000}}, override_names={("server", "port"): "--port"})
    monkeypatch.setenv("IDRSERVE_CACHE_DIR_MAX_BYTES", "lots")
    with pytest.raises(SettingsError, match=r"^IDRSERVE_CACHE_DIR_MAX_BYTES=lots: expected"):
        load_settings()


def test_errors_never_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({"omero": {"password": ["not", "a", "string", "s3cret"]}})
    assert str(err.value).startswith("the command line *** (omero.password): expected")
    monkeypatch.setenv("IDRSERVE_CACHE__REDIS_TTL_S", "redis://:s3cret@host/0")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith("IDRSERVE_CACHE__REDIS_TTL_S=redis://:***@host/0: expected")


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
