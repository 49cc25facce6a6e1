"""Path traversal through every route that takes a path or an identifier, raw and encoded.

The data root sits inside a directory that also holds a sentinel file (and a sentinel
"image" outside the root); every payload tries to climb to them. The requests go out as raw
bytes on a socket (`http.client`), so no client normalises `..` away first. Pass: no response
ever carries a sentinel, no 5xx, every 4xx is JSON.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from idrserve.app import create_app
from idrserve.http.openapi import routes
from idrserve.settings import load_settings
from tests.ops.conftest import Server

SECRET = "idrserve-traversal-sentinel-7c1e"
TARGETS = ["secret.txt", "outside.zarr/.zattrs", "etc/passwd"]


def _payloads() -> list[str]:
    out: list[str] = []
    for target in TARGETS:
        for depth in (1, 2, 3, 6):
            up = "../" * depth
            out += [
                up + target,
                up.replace("/", "%2F") + target.replace("/", "%2F"),
                up.replace("..", "%2e%2e") + target,
                up.replace("..", "%252e%252e") + target,
                up.replace("/", "\\") + target,
                (up + target).replace("/", "%5C"),
                ".%2e/" * depth + target,
            ]
    out += ["%00", "..%00", "/etc/passwd", "%2Fetc%2Fpasswd", "....//....//secret.txt"]
    return out


@pytest.fixture(scope="module")
def jail(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    """<tmp>/jail/root (the data root: demo images 1001 and 1003) beside secrets."""
    jail = tmp_path_factory.mktemp("jail")
    root = jail / "data" / "root"
    root.mkdir(parents=True)
    for iid in (1001, 1003):
        shutil.copytree(demo_data / f"{iid}.zarr", root / f"{iid}.zarr", symlinks=True)
    (jail / "data" / "secret.txt").write_text(SECRET)
    (jail / "secret.txt").write_text(SECRET)
    # A complete image outside the root: if it is ever served, the root was escaped.
    shutil.copytree(demo_data / "1003.zarr", jail / "data" / "outside.zarr")
    attrs = jail / "data" / "outside.zarr" / ".zattrs"
    attrs.write_text(attrs.read_text().replace("{", '{"sentinel": "' + SECRET + '", ', 1))
    return root


def _raw_get(server: Server, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _templates(zarr_root: Path) -> list[str]:
    """Every GET route with a parameter, from the app itself (new routes join by themselves)."""
    app = create_app(load_settings({"source": {"zarr_root": str(zarr_root)}}))
    return sorted({path for method, path, _ in routes(app) if method == "GET" and "{" in path})


def _fill(template: str, target: str, payload: str) -> str:
    """Put the payload in parameter `target`; valid demo values in the others."""
    values = {"iid": "1003", "z": "0", "t": "0", "version": "3", "level": "0", "col": "0"}
    values |= {"row": "0", "ext": "jpg", "w": "64", "h": "64", "size": "64", "share": "1"}
    values |= {"key": ".zattrs", "tail": "1003/info.json", "path": "x.js"}

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        return payload if name == target else values.get(name, "0")

    return re.sub(r"\{(\w+)\}", sub, template)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_route_escapes_the_data_root(make_server: Any, jail: Path) -> None:
    server: Server = make_server(jail, IDRSERVE_LOG__ACCESS_LOG="false")
    templates = _templates(jail)
    assert len(templates) >= 20
    checked = 0
    problems: list[str] = []
    for template in templates:
        for target in re.findall(r"\{(\w+)\}", template):
            for payload in _payloads():
                path = _fill(template, target, payload)
                for query in ("", "?tile=0,0,0&region=0,0,8,8"):
                    status, _, body = _raw_get(server, path + query)
                    checked += 1
                    where = f"{path + query} -> {status}"
                    if SECRET.encode() in body or b"root:x:0:0" in body:
                        problems.append(f"LEAK {where}")
                    if status >= 500:
                        problems.append(f"5xx {where}: {body[:200]!r}")
                    if 400 <= status < 500:
                        try:
                            json.loads(body)
                        except ValueError:
                            problems.append(f"non-JSON 4xx {where}: {body[:100]!r}")
    print(f"traversal: {checked} requests over {len(templates)} routes")
    assert not problems, "\n".join(problems[:40])
    # The payloads did reach real handlers: a valid request on the same server works.
    assert _raw_get(server, "/webgateway/imgData/1003/")[0] == 200
