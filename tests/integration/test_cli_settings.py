"""Every command takes the same settings flags, and a bad setting is one line, not a traceback."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from idrserve.cli import _overrides, build_parser


def subcommand(parser: argparse.ArgumentParser, *words: str) -> argparse.ArgumentParser:
    """The parser of the (sub)command `words` name (`config show`: the `config` parser)."""
    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            break
        parser = subs[0].choices[word]
    return parser


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")} - {"--help"}


@pytest.mark.parametrize(
    "command",
    [["config", "show"], ["cache", "stats"], ["cache", "purge", "--image", "1"],
     ["cache", "warm"]],
)  # fmt: skip
def test_every_settings_flag_of_serve_is_accepted_alike(command: list[str]) -> None:
    """Flag parity: what `serve --help` lists, `config show` and `cache …` take, to the same end."""
    parser = build_parser()
    serve_flags = options(subcommand(parser, "serve"))
    assert {"--config", "--port", "--zarr-root", "--cache-dir", "--omero-host"} <= serve_flags
    assert serve_flags <= options(subcommand(parser, *command))
    for flag in sorted(serve_flags - {"--config"}):
        given = _overrides(parser.parse_args([*command, flag, "1"]))
        assert given == _overrides(parser.parse_args(["serve", flag, "1"])), flag
        assert given, flag


def run_idrserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("IDRSERVE_")}
    return subprocess.run(
        [sys.executable, "-m", "idrserve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def test_config_show_shows_the_flags_over_environment_and_file(tmp_path: Path) -> None:
    toml = tmp_path / "idrserve.toml"
    toml.write_text("[server]\nport = 7000\nworkers = 3\n[source]\nzarr_root = '/from/file'\n")
    env = {"IDRSERVE_SERVER__PORT": "7100", "IDRSERVE_CACHE_DIR": "/from/env"}
    flags = ["--port", "9999", "--zarr-root", "/data/zarr", "--omero-password", "s3cret"]
    out = run_idrserve("config", "show", "--config", str(toml), *flags, env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["server"]["port"] == 9999  # the flag beats the environment and the file
    assert doc["source"]["zarr_root"] == "/data/zarr"
    assert doc["server"]["workers"] == 3  # from the file, where nothing else says otherwise
    assert doc["cache"]["dir"] == "/from/env"
    assert "s3cret" not in out.stdout
    assert json.loads(run_idrserve("config", "show", env=env).stdout)["server"]["port"] == 7100


def test_cache_stats_takes_the_cache_flags(tmp_path: Path) -> None:
    out = run_idrserve("cache", "stats", "--cache-dir", str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert "disk" in doc["tiers"] and doc["disk"]["dir"] == str(tmp_path / "c")


COMMANDS = {
    "serve": ["serve", "--zarr-root", "{tmp}"],
    "demo": ["demo", "--data-dir", "{tmp}/demo"],
    "config show": ["config", "show"],
    "cache stats": ["cache", "stats"],
    "cache purge": ["cache", "purge", "--image", "1", "--cache-dir", "{tmp}/c"],
    "cache warm": ["cache", "warm", "--image", "1"],
}
BAD_TOML_KEY = "[server]\nprot = 8080\n"
BAD_TOML = "[server\nport = 8080\n"
# (environment, file contents for --config, extra flags) -> a part of the one line expected.
CASES = {
    "misspelt variable": (
        {"IDRSERVE_LIMITS__MAX_TILE_LENGHT": "1024"}, None, [],
        "unknown setting IDRSERVE_LIMITS__MAX_TILE_LENGHT in the environment "
        "(did you mean IDRSERVE_LIMITS__MAX_TILE_LENGTH?)",
    ),
    "unknown group": (
        {"IDRSERVE_FOO__BAR": "1"}, None, [],
        "unknown setting IDRSERVE_FOO__BAR in the environment: expected IDRSERVE_<GROUP>__<KEY>",
    ),
    "bad value": (
        {"IDRSERVE_SERVER__PORT": "abc"}, None, [],
        "IDRSERVE_SERVER__PORT=abc: expected a valid integer",
    ),
    "bad flag value": ({}, None, ["--port", "70000"], "--port 70000 (server.port): expected"),
    "unknown key in file": (
        {}, BAD_TOML_KEY, [], "unknown setting server.prot in {toml} (did you mean server.port?)"
    ),
    "bad file": ({}, BAD_TOML, [], "config file {toml} is not valid TOML ("),
    "missing file": ({}, "", ["--config", "{tmp}/nope.toml"], "{tmp}/nope.toml (from --config)"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_setting_is_one_line_and_exit_status_2(
    command: str, case: str, tmp_path: Path
) -> None:
    env, toml_text, flags, expected = CASES[case]
    toml = tmp_path / "idrserve.toml"
    args = [a.format(tmp=tmp_path) for a in [*COMMANDS[command], *flags]]
    if toml_text:
        toml.write_text(toml_text)
        args += ["--config", str(toml)]
    out = run_idrserve(*args, env=env)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"idrserve {command}: "), lines[0]
    assert expected.format(toml=toml, tmp=tmp_path) in lines[0]
    assert not (tmp_path / "demo").exists()  # refused before writing anything


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for command, data_flag in (("serve", "--zarr-root"), ("demo", "--data-dir")):
            out = run_idrserve(command, data_flag, str(tmp_path), "--port", port)
            assert out.returncode == 2
            assert out.stderr.splitlines() == [
                f"idrserve {command}: cannot listen on 127.0.0.1:{port}: Address already in use"
                " (another server running? --port picks another port)"
            ]


def test_cache_warm_without_a_server_is_one_line() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = run_idrserve("cache", "warm", "--image", "1", "--port", port)
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"idrserve cache warm: cannot reach http://localhost:{port} (")
