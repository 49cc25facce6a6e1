"""deploy/nginx/ for real: nginx with the shipped configuration in front of idrserve and OMERO.web.

The shipped files are rendered into a temporary directory by literal replacement of the site
values documented at the top of deploy/nginx/idrserve.conf (ports, cache directory). idrserve runs
with `Cache-Control: public, max-age=4`, so the module can also show that nginx takes freshness from
idrserve's Cache-Control (not from its own 1-day fallback) and serves expired entries stale while
idrserve is down. The idrserve-down test kills idrserve and therefore runs last.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from idrserve import demo

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
MAX_AGE_S = 4
# The images the tests need; 1001 (the large one) is skipped to keep the module fast.
IMAGES = (1002, 1003)
TILE = "/webgateway/render_image_region/1002/0/0/?tile=0,0,0&q=0.8"
STALE_URL = "/webgateway/render_image_region/1002/0/0/?tile=0,0,0&q=0.61"
# The commented-out block of idrserve.conf that serves idrserve under /idrserve/ as well.
PATH_PREFIX_BLOCK = re.compile(
    r"^    # >>> path prefix\n(.*?)^    # <<< path prefix\n", re.M | re.S
)

STAND_IN = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = ("omero.web stand-in: " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Stand-In", "omeroweb")
        self.send_header("Access-Control-Allow-Origin", "https://omero.example")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if found is None:
        pytest.fail(
            "nginx not found (PATH or /usr/sbin/nginx): the deployment tests need a real nginx; "
            "`bash scripts/test.sh` installs nginx-light, or `apt-get install nginx-light`"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def get(
    port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 10
) -> Response:
    return send(port, "GET", path, headers, timeout)


def send(
    port: int, method: str, path: str, headers: dict[str, str] | None = None, timeout: float = 10
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def render_config(
    out_dir: Path,
    *,
    listen: int,
    idrserve: int,
    omeroweb: int,
    cache: Path,
    rate_limit: bool = False,
    path_prefix: bool = False,
    extra: dict[str, str] | None = None,
) -> Path:
    """Copy deploy/nginx/ into out_dir with the site values replaced; returns the nginx.conf.

    `path_prefix` uncomments the block between the `>>> path prefix` and `<<< path prefix`
    markers, as its comment tells an operator to.
    """
    conf = (DEPLOY / "idrserve.conf").read_text()
    if path_prefix:
        conf = uncomment_path_prefix(conf)
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{listen};",
        "127.0.0.1:8080": f"127.0.0.1:{idrserve}",
        "127.0.0.1:8000": f"127.0.0.1:{omeroweb}",
        "/var/cache/nginx/idrserve": str(cache),
        "/var/log/nginx/idrserve.access.log": str(out_dir / "logs" / "idrserve.access.log"),
    }
    if rate_limit:
        replacements["# switch on;"] = "switch on;"
    replacements.update(extra or {})
    for old, new in replacements.items():
        assert old in conf, f"deploy/nginx/idrserve.conf no longer contains {old!r}"
        conf = conf.replace(old, new)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)  # nginx creates only the zones' last path component
    for sub in ("logs", "tmp"):
        (out_dir / sub).mkdir(exist_ok=True)
    (out_dir / "idrserve.conf").write_text(conf)
    shutil.copy(DEPLOY / "nginx.conf", out_dir / "nginx.conf")
    return out_dir / "nginx.conf"


def uncomment_path_prefix(conf: str) -> str:
    """idrserve.conf with its path-prefix block switched on (each line's `# ` removed)."""
    block = PATH_PREFIX_BLOCK.search(conf)
    assert block is not None, "deploy/nginx/idrserve.conf lost its `>>> path prefix` block"
    lines = block.group(1).splitlines(keepends=True)
    assert lines and all(line.startswith("    # ") for line in lines), lines
    on = "".join("    " + line.removeprefix("    # ") for line in lines)
    return conf[: block.start(1)] + on + conf[block.end(1) :]


def nginx_args(prefix: Path, *extra: str) -> list[str]:
    # As root, nginx's workers would drop to `nobody`, who cannot write pytest's private tmp dirs.
    globals_ = "user root;" if os.geteuid() == 0 else ""
    args = [
        nginx_binary(),
        "-p",
        str(prefix),
        "-c",
        str(prefix / "nginx.conf"),
        "-e",
        str(prefix / "logs" / "startup.log"),
    ]
    if globals_ or extra:
        args += ["-g", " ".join(filter(None, [globals_, *extra]))]
    return args


def wait_until(
    check_port: int, path: str, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 30
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited early (code {proc.returncode})"
        try:
            if get(check_port, path, timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not become ready")


@dataclass
class Stack:
    nginx_port: int
    idrserve_port: int
    omeroweb_port: int
    prefix: Path
    idrserve: subprocess.Popen[bytes]
    primed_at: float = 0.0
    primed_body: bytes = b""
    logs: list[IO[bytes]] = field(default_factory=list)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nginx_binary()
    root = tmp_path_factory.mktemp("nginx")
    data = root / "zarr"
    for image_id, _name, write in demo._IMAGES:
        if image_id in IMAGES:
            write(data / f"{image_id}.zarr")

    idrserve_port, omeroweb_port, nginx_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["IDRSERVE_SERVER__CACHE_CONTROL"] = f"public, max-age={MAX_AGE_S}"
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []

    def spawn(
        args: list[str], log_name: str, proc_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(root / log_name, "wb")  # noqa: SIM115 - closed in teardown
        logs.append(log)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=proc_env)
        procs.append(proc)
        return proc

    prefix = root / "nginx"
    render_config(
        prefix,
        listen=nginx_port,
        idrserve=idrserve_port,
        omeroweb=omeroweb_port,
        cache=root / "cache",
    )
    try:
        idrserve = spawn(
            [
                sys.executable,
                "-m",
                "idrserve",
                "serve",
                "--zarr-root",
                str(data),
                "--port",
                str(idrserve_port),
            ],
            "idrserve.log",
            env,
        )
        stand_in = spawn([sys.executable, "-c", STAND_IN, str(omeroweb_port)], "omeroweb.log")
        nginx = spawn(nginx_args(prefix, "daemon off;"), "nginx.log")
        wait_until(idrserve_port, "/healthz", idrserve, "idrserve")
        wait_until(omeroweb_port, "/", stand_in, "OMERO.web stand-in")
        wait_until(nginx_port, "/healthz", nginx, "nginx")
        st = Stack(nginx_port, idrserve_port, omeroweb_port, prefix, idrserve, logs=logs)
        # Cache the URL of the idrserve-down test now, so that its entry has expired by then.
        first = get(nginx_port, STALE_URL)
        assert first.status == 200 and first.header("X-Cache-Status") == "MISS"
        st.primed_at, st.primed_body = time.monotonic(), first.body
        yield st
    finally:
        for proc in reversed(procs):
            stop(proc)
        for log in logs:
            log.close()
        for name in ("logs/error.log", "idrserve.log"):
            path = root / "nginx" / name if name.startswith("logs") else root / name
            if path.exists():
                print(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")


def cache_requests(port: int) -> float:
    """idrserve's memory-tier lookups so far: one per request that reached a rendering handler."""
    text = get(port, "/metrics").body.decode()
    pattern = r'^idrserve_cache_requests_total\{result="(hit|miss)",tier="memory"\} ([0-9.e+]+)$'
    return sum(float(m.group(2)) for m in re.finditer(pattern, text, re.M))


def test_nginx_t_accepts_shipped_config(tmp_path: Path) -> None:
    for rate_limit, path_prefix in ((False, False), (True, False), (False, True), (True, True)):
        prefix = tmp_path / f"rl{int(rate_limit)}-pp{int(path_prefix)}"
        render_config(
            prefix,
            listen=free_port(),
            idrserve=free_port(),
            omeroweb=free_port(),
            cache=tmp_path / "cache",
            rate_limit=rate_limit,
            path_prefix=path_prefix,
        )
        done = subprocess.run(
            [*nginx_args(prefix), "-t"], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert "test is successful" in done.stderr


def test_rate_limit_switch(stack: Stack, tmp_path: Path) -> None:
    """Uncommenting the one line turns on 429s for idrserve routes only (limits scaled down)."""
    port = free_port()
    prefix = tmp_path / "limited"
    render_config(
        prefix,
        listen=port,
        idrserve=stack.idrserve_port,
        omeroweb=stack.omeroweb_port,
        cache=tmp_path / "cache",
        rate_limit=True,
        extra={"rate=100r/s": "rate=1r/s", "burst=400": "burst=5"},
    )
    with open(tmp_path / "nginx.log", "wb") as log:
        proc = subprocess.Popen(
            nginx_args(prefix, "daemon off;"), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until(port, "/healthz", proc, "rate-limited nginx")
            tiles = [get(port, TILE) for _ in range(15)]
            others = [get(port, "/webclient/") for _ in range(15)]
        finally:
            stop(proc)
    codes = [r.status for r in tiles]
    assert codes[:6] == [200] * 6, codes  # the burst
    assert codes.count(429) >= 8, codes
    assert all(r.headers.get_all("Access-Control-Allow-Origin") == ["*"] for r in tiles)
    limited = [r for r in tiles if r.status == 429]
    assert all(json.loads(r.body)["error"] == "rate_limited" for r in limited)
    assert {r.header("Content-Type") for r in limited} == {"application/json"}
    assert {r.status for r in others} == {200}


def test_tile_miss_then_hit(stack: Stack) -> None:
    first = get(stack.nginx_port, TILE)
    assert first.status == 200
    assert first.header("Content-Type") == "image/jpeg"
    assert first.header("X-Cache-Status") == "MISS"
    assert first.header("X-Cache") is not None  # idrserve's own header passes through
    assert first.header("Cache-Control") == f"public, max-age={MAX_AGE_S}"
    second = get(stack.nginx_port, TILE)
    assert second.status == 200
    assert second.header("X-Cache-Status") == "HIT"
    assert second.body == first.body
    assert second.header("ETag") == first.header("ETag")


def test_cache_busters_are_not_in_the_key(stack: Stack) -> None:
    base = "/webgateway/render_image_region/1002/0/0/?tile=0,1,0&q=0.8"
    assert get(stack.nginx_port, base).header("X-Cache-Status") == "MISS"
    for variant in (
        base + "&_=12345",
        base + "&rev=999",
        "/webgateway/render_image_region/1002/0/0/?_=1700000000000&tile=0,1,0&rev=3&q=0.8",
        "/webgateway/render_image_region/1002/0/0/?tile=0,1,0&_=1&q=0.8&rev=2",
    ):
        resp = get(stack.nginx_port, variant)
        assert resp.status == 200
        assert resp.header("X-Cache-Status") == "HIT", variant
    # Other parameters stay in the key, and so does their order.
    for other in (
        "/webgateway/render_image_region/1002/0/0/?tile=0,1,0&q=0.7",
        "/webgateway/render_image_region/1002/0/0/?q=0.8&tile=0,1,0",
        "/webgateway/render_image_region/1002/0/0/?tile=0,1,0&q=0.8&x_=1",
        "/webgateway/render_image_region/1002/0/0/?tile=0,1,0&q=0.8&prev=1",
    ):
        resp = get(stack.nginx_port, other)
        assert resp.status == 200
        assert resp.header("X-Cache-Status") == "MISS", other


def test_thumbnails_are_cached(stack: Stack) -> None:
    """Thumbnail zone; a URL without any query string shares its key with `?_=…` and `?`."""
    for path, busted in (
        ("/webgateway/render_thumbnail/1003/64/", ["?_=5", "?", "?rev=7&_=5"]),
        ("/webgateway/render_birds_eye_view/1003/48/", ["?rev=1700000000000"]),
        ("/webgateway/get_thumbnails/?id=1003&id=1002", ["&_=5"]),
    ):
        first = get(stack.nginx_port, path)
        assert first.status == 200, path
        assert first.header("X-Cache-Status") == "MISS", path
        for suffix in busted:
            resp = get(stack.nginx_port, path + suffix)
            assert resp.header("X-Cache-Status") == "HIT", path + suffix
            assert resp.body == first.body


def test_cors_header_exactly_once(stack: Stack) -> None:
    for path, status in (
        (TILE, 200),
        ("/webgateway/render_image_region/9999/0/0/?tile=0,0,0", 404),  # cached route, idrserve 404
        ("/webgateway/imgData/9999/", 404),  # uncached route, idrserve 404
        ("/webclient/", 200),  # the stand-in sends its own, different value
    ):
        resp = get(stack.nginx_port, path)
        assert resp.status == status, path
        assert resp.headers.get_all("Access-Control-Allow-Origin") == ["*"], path


# A browser's preflight for a request with a suffix Range and a token (tests/http/test_cors.py).
PREFLIGHT = {
    "Origin": "https://notebook.example",
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "authorization, range",
}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/webgateway/render_image_region/1002/0/0/?tile=0,0,0", 200),  # the feature probe
        ("/webgateway/imgData/1002/", 200),
        ("/omero_ms_image_region/", 200),
        ("/webclient/render_thumbnail/1002/", 204),
        ("/iiif/3/1002/info.json", 204),
        ("/deepzoom/1002.dzi", 204),
        ("/viewer/1002", 204),
        ("/zarr/1002.zarr/.zattrs", 204),
        ("/zarr/v3/1002.zarr/0/zarr.json", 204),
        ("/api/v1/images/1002", 204),
        ("/api/v1/images/1002/region", 204),
    ],
)
def test_preflight_reaches_idrserve(stack: Stack, path: str, status: int) -> None:
    """nginx passes OPTIONS on every idrserve location through (it caches GET and HEAD only),
    so the preflight is idrserve's: one Access-Control-Allow-Origin, idrserve's other headers."""
    resp = send(stack.nginx_port, "OPTIONS", path, PREFLIGHT)
    assert resp.status == status, (path, resp.body[:200])
    assert resp.headers.get_all("Access-Control-Allow-Origin") == ["*"], path
    assert resp.header("Access-Control-Allow-Methods") == "GET, HEAD, OPTIONS"
    assert resp.header("Access-Control-Allow-Headers") == "authorization, range"
    assert resp.header("Access-Control-Max-Age") == "86400"
    assert resp.header("X-Request-ID"), "answered by nginx, not idrserve"
    unknown = send(stack.nginx_port, "OPTIONS", "/zarr/1002.zarr-not/x", PREFLIGHT)
    assert unknown.status == 404 and json.loads(unknown.body)["error"] == "not_found"


def test_suffix_range_through_nginx(stack: Stack) -> None:
    """A Zarr reader's suffix range through the cached /zarr/ location: 206, readable span."""
    path = "/zarr/1002.zarr/0/0/0/0/0"
    whole = get(stack.nginx_port, path)
    assert whole.status == 200
    for _ in range(2):  # from idrserve, then from nginx's cache
        resp = get(stack.nginx_port, path, {"Range": "bytes=-100", "Origin": "https://x.example"})
        assert resp.status == 206 and resp.body == whole.body[-100:]
        n = len(whole.body)
        assert resp.header("Content-Range") == f"bytes {n - 100}-{n - 1}/{n}"
        exposed = resp.header("Access-Control-Expose-Headers") or ""
        assert "Content-Range" in exposed and "ETag" in exposed
        assert resp.headers.get_all("Access-Control-Allow-Origin") == ["*"]


@pytest.mark.parametrize(
    "path",
    [
        "/webgateway/render_image/1003/",
        "/webgateway/render_image/1002/0/0/",
        "/webclient/render_image_region/1002/0/0/?tile=0,0,0",
        "/webclient/123/render_image/1003/0/0/",
        "/webclient/render_image_download/1003/",
        "/webgateway/render_birds_eye_view/1003/",
        "/webclient/render_thumbnail/1003/",
        "/webclient/render_thumbnail/size/96/1003/",
        "/webgateway/get_thumbnail/1003/",
        "/webclient/get_thumbnails/?id=1003",
        "/webclient/imgData/1003/",
        "/webgateway/luts/",
        "/webgateway/luts_png/",
        "/iviewer/image_data/1003/",
        "/iviewer/image_data/1003/delta_t/",
        "/webgateway/get_image_rdefs_json/1003/",
        "/webgateway/histogram_json/1003/channel/0/?theZ=0&theT=0",
        "/webgateway/open_with/",
        "/webgateway/getImgRDef/",
        "/omero_ms_image_region/",
        "/healthz",
        "/api/v1/images/1003",
        "/api/v1/images/1003/region?y=0:8&x=0:8",
        "/zarr/1003.zarr/.zattrs",
        "/zarr/v3/1002.zarr/0/zarr.json",
    ],
)
def test_routes_to_idrserve(stack: Stack, path: str) -> None:
    resp = get(stack.nginx_port, path)
    assert resp.status == 200, path
    assert resp.header("X-Stand-In") is None
    assert resp.header("X-Request-ID") is not None  # set by idrserve


@pytest.mark.parametrize(
    "path",
    [
        "/webgateway/plate/424242/",
        "/webgateway/plate/424242/1/",
        "/webgateway/plate/424242/0/3/?size=64",
        "/webgateway/plate/424242/montage.jpg",
        "/webgateway/well/424242/children/",
        "/api/v1/plates/424242",
        "/zarr/plates/424242.zarr/.zattrs",
        "/zarr/v3/plates/424242.zarr/zarr.json",
        "/iiif/plates/424242/manifest.json",
    ],
)
def test_plate_routes_reach_idrserve(stack: Stack, path: str) -> None:
    """HCS plate URLs (docs/plates.md) go to idrserve, which knows no plate 424242 here."""
    resp = get(stack.nginx_port, path)
    assert resp.status == 404, path
    assert resp.header("X-Stand-In") is None
    assert resp.header("X-Request-ID") is not None
    assert json.loads(resp.body)["error"] == "not_found"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/webclient/",
        "/webclient/?show=image-1003",
        "/webgateway/",
        "/api/v0/",
        "/api/v0/m/images/1003/",
        "/api/v1/images/",
        "/static/x.js",
        "/metrics",
        "/iviewer/",
        "/iviewer/roi/5/image_data/",
        "/webclient/api/paths_to_object/?image=1003&page_size=50",
        "/webgateway/copyImgRDef/?imageId=1003&c=1|0:255$FF0000",
    ],
)
def test_everything_else_reaches_omeroweb(stack: Stack, path: str) -> None:
    resp = get(stack.nginx_port, path)
    assert resp.status == 200, path
    assert resp.header("X-Stand-In") == "omeroweb"
    assert resp.body == f"omero.web stand-in: {path}".encode()
    assert resp.header("X-Cache-Status") is None


def test_paths_to_object_is_idrserves_for_iviewer_pages_only(stack: Stack) -> None:
    """iviewer's thumbnail-strip lookup is answered by idrserve (no database walk on OMERO);
    the webclient's `?show=` navigation keeps OMERO.web's real containers."""
    path = "/webclient/api/paths_to_object/?image=1003&page_size=10"
    from_iviewer = get(
        stack.nginx_port, path, {"Referer": "https://idr.example/iviewer/?images=1003"}
    )
    assert from_iviewer.header("X-Stand-In") is None
    assert json.loads(from_iviewer.body) == {"paths": []}
    from_webclient = get(
        stack.nginx_port, path, {"Referer": "https://idr.example/webclient/?show=image-1003"}
    )
    assert from_webclient.header("X-Stand-In") == "omeroweb"


def test_imgdata_proxied_uncached_and_gzipped(stack: Stack) -> None:
    for _ in range(2):
        resp = get(stack.nginx_port, "/webgateway/imgData/1003/", {"Accept-Encoding": "gzip"})
        assert resp.status == 200
        assert (resp.header("Content-Type") or "").startswith("application/json")
        assert resp.header("Content-Encoding") == "gzip"
        assert json.loads(gzip.decompress(resp.body))["id"] == 1003
        assert resp.header("X-Cache-Status") is None  # as on IDR, imgData is not cached by nginx
    plain = get(stack.nginx_port, "/webgateway/imgData/1003/")
    assert plain.header("Content-Encoding") is None
    assert json.loads(plain.body)["id"] == 1003


def test_iviewer_boot_json_proxied_uncached(stack: Stack) -> None:
    """iviewer's boot JSON goes to idrserve like imgData: not cached by nginx (a histogram is
    cached by idrserve itself), gzipped on the way out."""
    for path in ("/iviewer/image_data/1003/", "/webgateway/histogram_json/1003/channel/0/"):
        for _ in range(2):
            resp = get(stack.nginx_port, path, {"Accept-Encoding": "gzip"})
            assert resp.status == 200, path
            assert resp.header("X-Cache-Status") is None, path
            assert resp.header("Content-Encoding") == "gzip", path
            assert json.loads(gzip.decompress(resp.body)), path
    assert get(stack.nginx_port, "/webgateway/histogram_json/1003/channel/0/").header(
        "X-Cache"
    ) in ("memory", "disk")


def test_get_img_rdef_goes_to_omeroweb_after_a_copy(stack: Stack) -> None:
    """Settings copied with iviewer's Copy live in OMERO.web's session: copyImgRDef's answer
    marks the browser with a cookie, and its getImgRDef requests then go to OMERO.web."""
    fresh = get(stack.nginx_port, "/webgateway/getImgRDef/")
    assert fresh.header("X-Stand-In") is None
    assert json.loads(fresh.body) == {"rdef": None}
    assert fresh.header("Set-Cookie") is None
    copied = get(stack.nginx_port, "/webgateway/copyImgRDef/?imageId=1003&c=1")
    assert copied.header("X-Stand-In") == "omeroweb"
    cookie = copied.header("Set-Cookie") or ""
    assert cookie.startswith("idrserve_rdef_copied=1;") and "Path=/webgateway/" in cookie
    sent = "sessionid=x; " + cookie.split(";")[0]
    marked = get(stack.nginx_port, "/webgateway/getImgRDef/", {"Cookie": sent})
    assert marked.header("X-Stand-In") == "omeroweb"
    assert marked.body == b"omero.web stand-in: /webgateway/getImgRDef/"


def test_stampede_reaches_idrserve_once(stack: Stack) -> None:
    path = "/webgateway/render_image/1002/0/0/?c=1|0:255$FF0000,2|0:255$00FF00&m=c&q=0.93"
    n = 30
    before = cache_requests(stack.idrserve_port)
    barrier = threading.Barrier(n)
    results: list[Response | BaseException] = [ValueError("not run")] * n

    def worker(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            results[i] = get(stack.nginx_port, path, timeout=20)
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    responses = [r for r in results if isinstance(r, Response)]
    assert len(responses) == n, [r for r in results if not isinstance(r, Response)]
    assert {r.status for r in responses} == {200}
    assert len({r.body for r in responses}) == 1
    statuses = sorted(r.header("X-Cache-Status") or "" for r in responses)
    assert statuses.count("MISS") == 1, statuses
    # nginx's cache lock let one request through; the other 29 were answered from its cache.
    assert cache_requests(stack.idrserve_port) - before == 1


def test_iiif_through_nginx(stack: Stack) -> None:
    """info.json names nginx's public address (X-Forwarded-*), is never shared from nginx's
    cache (it depends on the Host), and IIIF tiles are cached like webgateway tiles."""
    port = stack.nginx_port
    info = get(port, "/iiif/3/1002/info.json", headers={"Host": f"tiles.example.org:{port}"})
    assert info.status == 200
    assert json.loads(info.body)["id"] == f"http://tiles.example.org:{port}/iiif/3/1002"
    assert info.header("Access-Control-Allow-Origin") == "*"
    other = get(port, "/iiif/3/1002/info.json", headers={"Host": f"127.0.0.1:{port}"})
    assert json.loads(other.body)["id"] == f"http://127.0.0.1:{port}/iiif/3/1002"
    assert other.header("X-Cache-Status") != "HIT"
    redirect = get(port, "/iiif/3/1002")
    assert redirect.status == 303
    assert redirect.header("Location") == f"http://127.0.0.1:{port}/iiif/3/1002/info.json"
    tile = "/iiif/3/1002/0,0,256,256/128,128/0/default.jpg"
    first, second = get(port, tile), get(port, tile)
    assert first.status == second.status == 200
    assert (first.header("X-Cache-Status"), second.header("X-Cache-Status")) == ("MISS", "HIT")
    bad = get(port, "/iiif/3/1002/full/max/45/default.jpg")
    assert bad.status == 501 and bad.header("Access-Control-Allow-Origin") == "*"


def test_nginx_refusals_on_idrserve_routes_are_json(stack: Stack) -> None:
    """A request body over client_max_body_size (1k on idrserve routes) is refused by nginx
    itself, in idrserve's JSON error shape with CORS; OMERO.web's routes keep their 100m."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.nginx_port, timeout=10)
    try:
        conn.request("POST", TILE, body=b"x" * 4096)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 413
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers.get_all("Access-Control-Allow-Origin") == ["*"]
    assert json.loads(body)["error"] == "too_large"


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP client library would, read until nginx closes; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        # A header over large_client_header_buffers (4 × 8k): nginx's internal 494.
        (
            b"GET "
            + TILE.encode()
            + b" HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"a" * 20000
            + b"\r\n\r\n",
            400,
        ),
        # A cookie that large, the usual way this happens to a browser.
        (
            b"GET /webgateway/imgData/1002/ HTTP/1.1\r\nHost: x\r\nCookie: s="
            + b"b" * 20000
            + b"\r\n\r\n",
            400,
        ),
        # A header line with no colon.
        (b"GET " + TILE.encode() + b" HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
        # HTTP/1.1 without Host.
        (b"GET " + TILE.encode() + b" HTTP/1.1\r\n\r\n", 400),
    ],
    ids=["header-too-large", "cookie-too-large", "bad-header-line", "no-host"],
)
def test_requests_nginx_refuses_before_routing_are_json(
    stack: Stack, request_bytes: bytes, code: int
) -> None:
    """Refusals that happen before nginx picks a location get the JSON error shape and CORS too,
    not nginx's HTML page."""
    status, headers, body = raw_exchange(stack.nginx_port, request_bytes)
    assert status == code, body[:300]
    assert headers["content-type"] == "application/json", body[:300]
    assert headers.get("access-control-allow-origin") == "*"
    doc = json.loads(body)
    assert doc["error"] == "bad_request" and doc["request_id"]
    assert "nginx" in doc["detail"]


def test_zz_idrserve_down_serves_stale_and_fails_fast(stack: Stack) -> None:
    # Runs last (it stops idrserve). The entry cached by the fixture is older than idrserve's
    # max-age by now (waiting out the remainder if not), so nginx would normally ask idrserve again.
    # nginx keeps whole seconds: an entry stored at second S with max-age=4 is fresh through
    # S + 4 (`valid_sec < now`), i.e. up to 5 s after it was stored; wait 2 s past max-age.
    remaining = stack.primed_at + MAX_AGE_S + 2.0 - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    stop(stack.idrserve)
    stale = get(stack.nginx_port, STALE_URL)
    assert stale.status == 200
    assert stale.header("X-Cache-Status") == "STALE"
    assert stale.body == stack.primed_body
    started = time.monotonic()
    uncached = get(stack.nginx_port, "/webgateway/render_image_region/1002/0/0/?tile=0,0,0&q=0.12")
    assert uncached.status in (502, 504)
    assert time.monotonic() - started < 5
    assert uncached.headers.get_all("Access-Control-Allow-Origin") == ["*"]
    # nginx's own error, in idrserve's JSON shape (deploy/nginx: @idrserve_error).
    assert uncached.header("Content-Type") == "application/json"
    doc = json.loads(uncached.body)
    assert doc["error"] == ("unavailable" if uncached.status == 502 else "upstream_timeout")
    assert doc["request_id"]
