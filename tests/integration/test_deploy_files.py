"""The shipped deployment files are consistent with the code: env example, systemd units, compose.

The compose file is never run here (no container engine); it is parsed and its references
checked. The systemd units are parsed strictly and, verified with `systemd-analyze`.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from idrserve.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENV_EXAMPLE = DEPLOY / "idrserve.env.example"
UNITS = DEPLOY / "systemd"
COMPOSE = DEPLOY / "compose" / "compose.yaml"

# The flat names load_settings also accepts (idrserve/settings.py `_FLAT_ENV`).
FLAT = {
    "IDRSERVE_REDIS_URL": ("cache", "redis_url"),
    "IDRSERVE_CACHE_DIR": ("cache", "dir"),
    "IDRSERVE_CACHE_DIR_MAX_BYTES": ("cache", "dir_max_bytes"),
}
_LINE = re.compile(r"^(#?)\s*(IDRSERVE_[A-Z0-9_]+)=(.*)$")


def env_example() -> list[tuple[str, str, bool]]:
    """(name, value, active) for every IDRSERVE_* line, commented-out defaults included."""
    out = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = _LINE.match(line)
        if m:
            out.append((m.group(2), m.group(3), m.group(1) == ""))
    return out


def setting_path(name: str) -> tuple[str, str]:
    if name in FLAT:
        return FLAT[name]
    group, _, key = name.removeprefix("IDRSERVE_").partition("__")
    assert key, f"{name}: expected IDRSERVE_<GROUP>__<KEY>"
    return group.lower(), key.lower()


def same_value(actual: Any, raw: str) -> bool:
    if isinstance(actual, SecretStr):
        return actual.get_secret_value() == raw
    if isinstance(actual, bool):
        return actual == (raw.lower() in ("1", "true", "yes", "on"))
    if isinstance(actual, int | float):
        return actual == float(raw)
    if isinstance(actual, Path):
        return actual == Path(raw)
    return bool(actual == raw)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("IDRSERVE_"):
            monkeypatch.delenv(name)
    return monkeypatch


# ---- env example ---------------------------------------------------------------------------


def test_env_example_lines_are_systemd_environment_file_syntax() -> None:
    for n, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=[^\"'#]*", line), f"line {n}: {line!r}"
        assert not line.startswith("export "), f"line {n}"


def test_env_example_names_are_real_settings_and_values_apply(
    clean_env: pytest.MonkeyPatch,
) -> None:
    entries = env_example()
    assert len(entries) > 40
    names = [name for name, _, _ in entries]
    assert len(names) == len(set(names)), "a variable appears twice"
    # Every line, commented-out defaults included, at once: extra="forbid" rejects any typo.
    for name, value, _ in entries:
        clean_env.setenv(name, value)
    settings = load_settings()
    for name, value, _ in entries:
        group, key = setting_path(name)
        actual = getattr(getattr(settings, group), key)
        assert same_value(actual, value), f"{name}={value!r} gave {group}.{key}={actual!r}"


def test_env_example_active_lines_alone_load(clean_env: pytest.MonkeyPatch) -> None:
    active = {name: value for name, value, on in env_example() if on}
    assert {
        "IDRSERVE_SOURCE__ZARR_ROOT",
        "IDRSERVE_SERVER__PORT",
        "IDRSERVE_SERVER__WORKERS",
        "IDRSERVE_REDIS_URL",
        "IDRSERVE_CACHE_DIR",
        "IDRSERVE_CACHE_DIR_MAX_BYTES",
    } <= set(active)
    for name, value in active.items():
        clean_env.setenv(name, value)
    settings = load_settings()
    assert settings.source.zarr_root == active["IDRSERVE_SOURCE__ZARR_ROOT"]
    assert settings.cache.dir == Path(active["IDRSERVE_CACHE_DIR"])
    assert settings.cache.redis_url == active["IDRSERVE_REDIS_URL"]


def test_a_misspelt_variable_is_an_error(clean_env: pytest.MonkeyPatch) -> None:
    """The check above only means something if typos are rejected."""
    clean_env.setenv("IDRSERVE_SERVER__PORTT", "8080")
    with pytest.raises(SettingsError, match=r"did you mean IDRSERVE_SERVER__PORT\?"):
        load_settings()


def test_env_example_documents_every_setting() -> None:
    documented = {setting_path(name) for name, _, _ in env_example()}
    missing = []
    for group, field in Settings.model_fields.items():
        model = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        assert isinstance(model, BaseModel)
        for key in type(model).model_fields:
            if (group, key) not in documented:
                missing.append(f"IDRSERVE_{group.upper()}__{key.upper()}")
    assert not missing, f"add to deploy/idrserve.env.example: {missing}"


# ---- systemd units -------------------------------------------------------------------------


def parse_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        strict=True, interpolation=None, delimiters=("=",), comment_prefixes=("#", ";")
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(path.read_text(), source=str(path))
    return parser


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min)?", value)
    assert m, value
    return float(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_idrserve_unit() -> None:
    unit = parse_unit(UNITS / "idrserve.service")
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["EnvironmentFile"] == "/etc/idrserve/idrserve.env"
    assert service["ExecStart"].split()[:2] == ["/opt/idrserve/bin/idrserve", "serve"]
    assert service["Restart"] == "on-failure"
    assert service["User"] not in ("", "root")
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["PrivateTmp"] == "yes"
    assert int(service["LimitNOFILE"]) >= 4096
    assert service["KillSignal"] == "SIGTERM"
    # Long enough for the server's own drain (server.shutdown_timeout_s) to finish first.
    assert seconds(service["TimeoutStopSec"]) > Settings().server.shutdown_timeout_s
    # The disk cache directory of the env example is writable under ProtectSystem=strict.
    cache_dir = dict((n, v) for n, v, _ in env_example())["IDRSERVE_CACHE_DIR"]
    assert cache_dir in service["ReadWritePaths"].split()
    assert "redis-idrserve.service" in unit["Unit"]["After"].split()
    assert "redis-idrserve.service" in unit["Unit"]["Wants"].split()
    assert "network-online.target" in unit["Unit"]["After"].split()
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def _filter_syscalls(group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a `SystemCallFilter=` group, nested groups expanded."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze missing: run the tests through scripts/test.sh"
    seen = set() if seen is None else seen
    seen.add(group)
    out = subprocess.run(
        [analyze, "syscall-filter", group], capture_output=True, text=True, check=True
    ).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name.startswith("@"):
            if name not in seen:
                calls |= _filter_syscalls(name, seen)
        else:
            calls.add(name)
    return calls


def test_idrserve_unit_allows_the_system_calls_the_server_makes_beyond_io() -> None:
    """Calls a seccomp filter could refuse: the CPU pool lowers its threads' priority
    (setpriority, idrserve/cpupool.py) and the event-loop lag sampler arms a timerfd
    (idrserve/http/looplag.py). Refused, the first would log a warning, the second kill the
    process with SIGSYS."""
    service = parse_unit(UNITS / "idrserve.service")["Service"]
    allowed: set[str] = set()
    for group in service["SystemCallFilter"].split():
        allowed |= _filter_syscalls(group) if group.startswith("@") else {group}
    assert {"setpriority", "timerfd_create", "timerfd_settime"} <= allowed


def test_redis_unit_runs_the_repository_redis_conf() -> None:
    unit = parse_unit(UNITS / "redis-idrserve.service")
    service = unit["Service"]
    argv = service["ExecStart"].split()
    assert argv[0].endswith("/redis-server")
    assert argv[1] == "/etc/idrserve/redis.conf"
    assert "--supervised" in argv and argv[argv.index("--supervised") + 1] == "systemd"
    assert service["Type"] == "notify"
    assert service["User"] == "redis"
    assert service["Restart"] == "on-failure"
    assert (ROOT / "cache" / "redis.conf").is_file()


def systemd_verify(units: dict[str, str], tmp_path: Path) -> None:
    """`systemd-analyze verify` of unit texts by name; fails on any complaint about them.

    verify checks that ExecStart binaries exist: the caller points them at real ones."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze missing: run the tests through scripts/test.sh"
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / name) for name in units)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if str(tmp_path) in line or "idrserve" in line
    ]
    assert not problems, "\n".join(problems)


def test_units_verify_with_systemd_analyze(tmp_path: Path) -> None:
    """`systemd-analyze verify` (scripts/test.sh installs systemd when it is missing)."""
    redis = shutil.which("redis-server") or "/bin/true"
    units = {}
    for unit in ("idrserve.service", "redis-idrserve.service"):
        text = (UNITS / unit).read_text()
        text = text.replace("/opt/idrserve/bin/idrserve", sys.executable)
        units[unit] = text.replace("/usr/bin/redis-server", redis)
    systemd_verify(units, tmp_path)


# ---- compose -------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_services_and_healthchecks() -> None:
    services = compose()["services"]
    assert set(services) >= {"idrserve", "redis", "nginx"}
    idrserve = services["idrserve"]
    assert idrserve["deploy"]["replicas"] == 2
    assert "/healthz" in " ".join(idrserve["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["nginx"]["healthcheck"]["test"])
    env = idrserve["environment"]
    assert env["IDRSERVE_REDIS_URL"].startswith("redis://redis:")
    # The compose environment is made of real settings too.
    assert all(name.startswith("IDRSERVE_") for name in env)
    assert all(setting_path(name) for name in env)


def test_compose_environment_loads(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in compose()["services"]["idrserve"]["environment"].items():
        clean_env.setenv(name, str(value))
    settings = load_settings()
    assert settings.server.host == "0.0.0.0"
    assert settings.cache.redis_url == "redis://redis:6379/0"


def test_compose_references_existing_files() -> None:
    base = COMPOSE.parent
    services = compose()["services"]
    build = services["idrserve"]["build"]
    context = (base / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert context == ROOT
    assert dockerfile.is_file()
    # Every COPY source of the build stage exists in the build context.
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (context / source).exists(), f"Dockerfile: {line}"
    # Relative bind mounts point at files of this repository.
    mounts = 0
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith(".") and "$" not in source:
                assert (base / source).exists(), f"{name}: {volume}"
                mounts += 1
    assert mounts >= 2
    # Redis runs the repository's cache/redis.conf.
    assert any(v.startswith("../../cache/redis.conf:") for v in services["redis"]["volumes"])
    # nginx mounts deploy/nginx/ and renders its idrserve.conf, whose upstream literals the
    # command rewrites: they must still be in the file.
    nginx = services["nginx"]
    assert any(v.startswith("../nginx:") for v in nginx["volumes"])
    command = " ".join(nginx["command"])
    assert "/etc/idrserve/nginx/idrserve.conf" in command
    conf = (DEPLOY / "nginx" / "idrserve.conf").read_text()
    for literal in ("127.0.0.1:8080", "127.0.0.1:8000"):
        assert literal in conf, f"deploy/nginx/idrserve.conf no longer has {literal}"
        assert literal.replace(".", r"\.") in command


def test_deploy_readme_links_exist() -> None:
    text = (DEPLOY / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links
    for link in links:
        if "://" not in link:
            assert (DEPLOY / link).exists(), link


def test_idrserve_outlives_nginx_idle_upstream_connections() -> None:
    """nginx must be the side that closes an idle upstream keep-alive connection: if idrserve
    closed first, nginx could send a request on a connection being closed (a 502 or a retry)."""
    conf = (DEPLOY / "nginx" / "idrserve.conf").read_text()
    upstream = re.search(r"upstream idrserve \{(.*?)\}", conf, re.S)
    assert upstream is not None
    match = re.search(r"keepalive_timeout (\d+)s;", upstream.group(1))
    assert match is not None, "the idrserve upstream sets keepalive_timeout"
    limits = Settings().limits
    assert limits.keepalive_timeout_s > int(match.group(1))
    assert limits.header_timeout_s < limits.request_timeout_s
