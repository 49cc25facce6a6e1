"""deploy/ansible/ for real: ansible-lint (production profile), and the role run by
ansible-playbook over the test inventory with a local connection into a temporary root.

`idrserve_dest_root` makes the role render every file under a directory of its own and skip
what would change this machine (users, packages, services). The files it writes then go through
the same checks as the shipped ones: `systemd-analyze verify`, `nginx -t`, a real redis-server
started on the rendered redis.conf, and the installed `idrserve` reading the rendered env file.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .test_deploy_files import ENV_EXAMPLE, UNITS, env_example, systemd_verify
from .test_nginx import free_port, nginx_args

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "deploy" / "ansible"
TILES = ("idr-test-tiles1.example.org", "idr-test-tiles2.example.org")
PROXY = "idr-test-proxy1.example.org"
REDIS = "idr-test-redis1.example.org"
PASSWORD = "test-only-password"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} not found: it comes with the test extras (pip install -e '.[test]')")
    return found


def ansible_env(home: Path) -> dict[str, str]:
    """Ansible's own state (temp files, collections cache) under the test's directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDRSERVE_", "ANSIBLE_"))}
    env.update(
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_LINT_SKIP_VERSION_CHECK="1",
        ANSIBLE_LINT_NODEPS="1",
        ANSIBLE_NOCOLOR="1",
    )
    return env


@dataclass
class Run:
    root: Path
    output: str
    lint: subprocess.Popen[str]
    syntax: subprocess.CompletedProcess[str]

    def host(self, name: str) -> Path:
        return self.root / name


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("ansible")
    env = ansible_env(base / "home")
    # ansible-lint reads the whole tree (role, both playbooks, inventories); it runs while the
    # playbook does, on the other core.
    lint = subprocess.Popen(
        [tool("ansible-lint"), "--offline", "--nocolor", "--profile", "production"],
        cwd=ANSIBLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        root = base / "root"
        # One idrserve host is installed (a venv costs seconds); the nginx host still lists
        # both, as groups span the whole inventory.
        extra = {
            "ansible_python_interpreter": sys.executable,
            "idrserve_dest_root": f"{root}/{{{{ inventory_hostname }}}}",
            "vault_idrserve_redis_password": PASSWORD,
            "idrserve_python": sys.executable,
            # This checkout into the venv, its dependencies taken from the test environment.
            "idrserve_venv_site_packages": True,
            "idrserve_pip_extra_args": "--no-deps",
            "idrserve_wheel_build_args": "--no-build-isolation",
            "idrserve_wheel_dir": str(base / "wheel"),
            "idrserve_nginx_cache_dir": str(base / "nginx-cache"),
        }
        (base / "extra.yml").write_text(yaml.safe_dump(extra))
        limit = ",".join([TILES[0], PROXY, REDIS])
        playbook = [tool("ansible-playbook"), "-i", "inventories/test", "-c", "local"]
        done = subprocess.run(
            [*playbook, "site.yml", "-e", f"@{base / 'extra.yml'}", "--limit", limit],
            cwd=ANSIBLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr
        syntax = subprocess.run(
            [*playbook, "rolling_restart.yml", "--syntax-check"],
            cwd=ANSIBLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        yield Run(root, done.stdout, lint, syntax)
    finally:
        if lint.poll() is None:
            lint.kill()
        lint.wait(timeout=10)


def test_ansible_lint_production_profile_is_clean(run: Run) -> None:
    out, _ = run.lint.communicate(timeout=180)
    assert run.lint.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out, out


def test_rolling_restart_playbook(run: Run) -> None:
    assert run.syntax.returncode == 0, run.syntax.stdout + run.syntax.stderr
    (play,) = yaml.safe_load((ANSIBLE / "rolling_restart.yml").read_text())
    assert play["hosts"] == "idrserve"
    assert play["serial"] == 1 and play["max_fail_percentage"] == 0
    tasks = play["tasks"]
    restart = next(i for i, t in enumerate(tasks) if "ansible.builtin.systemd_service" in t)
    assert tasks[restart]["ansible.builtin.systemd_service"]["state"] == "restarted"
    # Before: the other hosts answer /readyz; after: this one does, before the next host goes.
    urls = [
        t["ansible.builtin.uri"]["url"].replace(
            "{{ idrserve_readyz_url }}", play["vars"]["idrserve_readyz_url"]
        )
        for t in tasks
        if "ansible.builtin.uri" in t
    ]
    assert len(urls) == 2 and all(url.endswith("/readyz") for url in urls), urls
    assert "ansible.builtin.uri" in tasks[restart - 1]
    assert tasks[restart + 1]["until"] == "idrserve_ready.status == 200"


def rendered_env(run: Run) -> dict[str, str]:
    lines = (run.host(TILES[0]) / "etc/idrserve/idrserve.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_env_file_is_the_example_with_the_inventory_values(run: Run) -> None:
    text = (run.host(TILES[0]) / "etc/idrserve/idrserve.env").read_text()
    example = ENV_EXAMPLE.read_text().splitlines()
    lines = text.splitlines()
    assert lines[0].startswith("#") and lines[1].startswith("#")
    assert len(lines) - 2 == len(example)
    active = rendered_env(run)
    changed = {}
    for mine, theirs in zip(lines[2:], example, strict=True):
        if mine != theirs:
            key = mine.split("=", 1)[0]
            assert re.fullmatch(rf"#?{key}=.*", theirs), (mine, theirs)
            changed[key] = active[key]
    assert changed == {
        "IDRSERVE_SOURCE__ZARR_ROOT": "s3://idr/zarr",
        "IDRSERVE_SOURCE__S3_ENDPOINT": "https://uk1s3.embassy.ebi.ac.uk",
        "IDRSERVE_SOURCE__S3_ANONYMOUS": "true",
        "IDRSERVE_SERVER__HOST": "10.0.3.11",
        "IDRSERVE_SERVER__WORKERS": "1",
        "IDRSERVE_REDIS_URL": f"redis://:{PASSWORD}@10.0.3.31:6379/0",
        "IDRSERVE_LOG__LEVEL": "DEBUG",
    }
    # Every active line of the example is still there.
    assert {name for name, _, on in env_example() if on} <= set(active)


def test_installed_idrserve_reads_the_env_file(run: Run) -> None:
    """The venv's own `idrserve` (installed by the role) loads the rendered settings."""
    binary = run.host(TILES[0]) / "opt/idrserve/bin/idrserve"
    assert binary.is_file()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")}
    env.pop("PYTHONPATH", None)  # the venv's installed copy, not this checkout
    env.update(rendered_env(run))
    done = subprocess.run(
        [str(binary), "config", "show"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "10.0.3.11" in done.stdout and "s3://idr/zarr" in done.stdout
    assert PASSWORD not in done.stdout, "config show must hide the Redis password"


def test_units_are_the_shipped_ones_and_verify(run: Run, tmp_path: Path) -> None:
    tiles = run.host(TILES[0]) / "etc/systemd/system"
    redis_units = run.host(REDIS) / "etc/systemd/system"
    unit = (tiles / "idrserve.service").read_text()
    assert unit == (UNITS / "idrserve.service").read_text()
    redis_unit = (redis_units / "redis-idrserve.service").read_text()
    assert redis_unit == (UNITS / "redis-idrserve.service").read_text()
    drop_in = (tiles / "idrserve.service.d" / "stop-timeout.conf").read_text()
    # shutdown_timeout_s (10, the default) + drain_grace_s (0) + 5.
    assert "\nTimeoutStopSec=15s\n" in drop_in
    # systemd reads a drop-in's [Service] lines after the unit's: verify them together, with
    # ExecStart pointing at the idrserve the role installed.
    binary = str(run.host(TILES[0]) / "opt/idrserve/bin/idrserve")
    redis = shutil.which("redis-server") or "/bin/true"
    systemd_verify(
        {
            "idrserve.service": unit.replace("/opt/idrserve/bin/idrserve", binary) + drop_in,
            "redis-idrserve.service": redis_unit.replace("/usr/bin/redis-server", redis),
        },
        tmp_path,
    )


def test_nginx_config_passes_nginx_t(run: Run, tmp_path: Path) -> None:
    conf = (run.host(PROXY) / "etc/nginx/conf.d/idrserve.conf").read_text()
    upstream = re.search(r"upstream idrserve \{(.*?)\}", conf, re.S)
    assert upstream is not None
    servers = re.findall(r"^\s+server (\S+) max_fails=1 fail_timeout=5s;", upstream.group(1), re.M)
    assert servers == ["10.0.3.11:8080", "10.0.3.12:8080"]
    assert "server 10.0.3.40:80;" in conf  # OMERO.web of the test inventory
    assert "listen 80;" in conf and "127.0.0.1:8000" not in conf
    # Run it inside the wrapper nginx.conf, as test_nginx.py runs the shipped file. The role
    # made the cache directory under its root; nginx -t wants it at the configured path.
    cache = re.search(r"proxy_cache_path (\S+)/render ", conf)
    assert cache is not None
    assert (run.host(PROXY) / cache.group(1).lstrip("/")).is_dir()
    Path(cache.group(1)).mkdir(parents=True, exist_ok=True)
    prefix = tmp_path / "nginx"
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "nginx" / "nginx.conf", prefix / "nginx.conf")
    (prefix / "idrserve.conf").write_text(
        conf.replace("listen 80;", f"listen 127.0.0.1:{free_port()};")
    )
    done = subprocess.run([*nginx_args(prefix), "-t"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def redis_call(port: int, *args: str) -> bytes:
    command = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(command.encode())
        return sock.recv(4096)


def test_redis_starts_on_the_rendered_config(run: Run, tmp_path: Path) -> None:
    conf = run.host(REDIS) / "etc/idrserve/redis.conf"
    text = conf.read_text()
    assert text.startswith((ROOT / "cache" / "redis.conf").read_text())
    assert "\nbind 127.0.0.1 10.0.3.31\n" in text and "\nmaxmemory 512mb\n" in text
    server = shutil.which("redis-server")
    assert server is not None, "redis-server missing: run the tests through scripts/test.sh"
    port = free_port()
    # Only the address is overridden (10.0.3.31 is not on this machine); the rest is the file.
    proc = subprocess.Popen(
        [server, str(conf), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            try:
                answer = redis_call(port, "PING")
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
                subprocess.run(["sleep", "0.05"], check=True)
        assert answer.startswith(b"-NOAUTH"), answer  # requirepass from the inventory
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"AUTH {PASSWORD}\r\nCONFIG GET maxmemory\r\n".encode())
            reply = b""
            while reply.count(b"\r\n") < 5:
                reply += sock.recv(4096)
        assert reply.startswith(b"+OK\r\n") and str(512 << 20).encode() in reply, reply
    finally:
        proc.terminate()
        proc.wait(timeout=10)
