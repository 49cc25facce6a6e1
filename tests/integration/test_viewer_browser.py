"""The viewer and docs pages in a real headless Chromium against a real `idrserve demo`.

Debian's `chromium` and `chromium-driver` (installed by scripts/test.sh) are driven through
Selenium with the system chromedriver; no browser is downloaded. Missing either is a failure,
not a skip. What is checked, per the issue: the page loads with no console errors, tiles are
requested (the server's access log shows them) and drawn (the OpenSeadragon canvas matches the
composite the server renders for the same settings), and each control changes the image. The
last tests open the same pages under a path prefix, through the shipped nginx configuration.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from .test_cli import free_port, wait_ready
from .test_nginx import nginx_args, render_config, stop, wait_until

pytestmark = pytest.mark.slow

DEMO_IMAGES = (1001, 1002, 1003, 1004, 1005, 1006)  # every kind the demo has (idrserve/demo.py)
# Odd sizes whose stored levels round down where OpenSeadragon's halving rounds up: the viewer
# must not ask for the tile column the level does not have.
ODD, ODD_SIZE = 1999, (4097, 3001)
IMAGES = (*DEMO_IMAGES, ODD)
CHROMIUM = ("chromium", "/usr/bin/chromium", "/usr/lib/chromium/chromium")
CHROMEDRIVER = ("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
TIMEOUT_S = 60


def _find(candidates: tuple[str, ...]) -> str | None:
    for c in candidates:
        found = shutil.which(c) or (c if os.access(c, os.X_OK) else None)
        if found:
            return found
    return None


@dataclass
class Server:
    base: str
    log: Path
    port: int

    def requests(self) -> list[tuple[str, int]]:
        """(route or path, status) of each request in the server's access log so far.

        idrserve's access log is JSON lines naming the route template (never the raw URL);
        aiohttp's plain format, should it come back, names the path.
        """
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if "route" in doc:
                    out.append((str(doc["route"]), int(doc.get("status", 0))))
                continue
            m = re.search(r'"GET (\S+) HTTP/1\.1" (\d{3})', line)
            if m:
                out.append((m.group(1), int(m.group(2))))
        return out

    def tile_count(self) -> int:
        """render_image_region requests the server answered with 200."""
        return sum(1 for r, s in self.requests() if "/render_image_region/" in r and s == 200)


def write_odd_image(path: Path, width: int, height: int, levels: int = 5) -> None:
    """Two uint8 channels (x gradient with a checkerboard, y gradient), NGFF 0.4, levels
    made by dropping every other pixel, so each is floor(previous / 2) in size."""
    import zarr

    yy, xx = np.mgrid[0:height, 0:width]
    checker = ((yy // 200 + xx // 200) % 2) * 120
    data = np.stack([xx * 130 // width + checker, yy * 255 // height]).astype(np.uint8)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for level in range(levels):
        arr = root.create_array(
            str(level), shape=data.shape, chunks=(1, 256, 256), dtype="uint8", fill_value=0
        )
        arr[...] = data
        f = float(2**level)
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [{"type": "scale", "scale": [1.0, f, f]}],
            }
        )
        data = data[:, : data.shape[1] // 2 * 2 : 2, : data.shape[2] // 2 * 2 : 2]
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "yx"
    ]
    channel = {"active": True, "window": {"min": 0, "max": 255, "start": 0, "end": 255}}
    root.attrs.update(
        {
            "multiscales": [{"version": "0.4", "axes": axes, "datasets": datasets}],
            "omero": {
                "channels": [
                    channel | {"label": "x", "color": "FF0000"},
                    channel | {"label": "y", "color": "00FF00"},
                ],
                "rdefs": {"model": "color"},
            },
        }
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The README's first command, `idrserve demo`, serving its images plus the odd one."""
    with demo_server(tmp_path_factory) as running:
        yield running


@contextlib.contextmanager
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`idrserve demo` on a free port, with the odd-sized image added; stopped on exit."""
    data = tmp_path_factory.mktemp("viewer_demo")
    write_odd_image(data / f"{ODD}.zarr", *ODD_SIZE)
    port = free_port()
    log = data.parent / f"{data.name}-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "idrserve", "demo", "--data-dir", str(data),
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "IDRSERVE_LOG__ACCESS_LOG": "true"},
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, proc)
            yield Server(base, log, port)
        finally:
            proc.terminate()
            proc.wait(30)


def test_demo_prints_the_viewer_urls(server: Server) -> None:
    out = server.log.read_text(errors="replace")
    for image_id in DEMO_IMAGES:
        assert f"http://localhost:{server.port}/viewer/{image_id}\n" in out, image_id
    assert re.search(rf"viewer:\s+http://localhost:{server.port}/viewer/\n", out), out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as driver:
        yield driver


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """Debian's Chromium through its chromedriver, console logging on; quit on exit."""
    chromium, driver_path = _find(CHROMIUM), _find(CHROMEDRIVER)
    if chromium is None or driver_path is None:
        pytest.fail(
            "headless Chromium tests need Debian's `chromium` and `chromium-driver` "
            "(`bash scripts/test.sh` installs them; or `apt-get install chromium chromium-driver`)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(TIMEOUT_S)
    try:
        # The console check must be able to fail: an error logged by a page is seen.
        driver.get("data:text/html,<title>probe</title>")
        driver.execute_script("console.error('idrserve-console-probe');")
        assert any("idrserve-console-probe" in e["message"] for e in console_problems(driver))
        yield driver
    finally:
        driver.quit()


def console_problems(driver: Any) -> list[dict[str, Any]]:
    """Browser console entries at warning level or above since the last call."""
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_loaded(driver: Any, previous_query: str | None = None) -> str:
    """Wait until the viewer reports every visible tile drawn; returns its render query."""

    def ready() -> str | None:
        state, query = driver.execute_script(
            "return [document.body.dataset.state, document.body.dataset.query || null];"
        )
        assert state != "error", driver.find_element("id", "status").text
        if state == "loaded" and query and query != previous_query:
            return str(query)
        return None

    return str(wait_for(ready, "the viewer to finish loading tiles"))


def fetch_image(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200, url
        return np.asarray(Image.open(io.BytesIO(resp.read())).convert("RGB"))


def image_rect(driver: Any) -> tuple[int, int, int, int]:
    """The image's x, y, w, h in the drawer canvas (= CSS pixels at scale factor 1)."""
    rect = driver.execute_script(
        """
        const v = window.idrViewer.viewer;
        const item = v.world.getItemAt(v.world.getItemCount() - 1);
        const size = item.getContentSize();
        const a = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
        const b = item.imageToViewerElementCoordinates(size);
        return [a.x, a.y, b.x - a.x, b.y - a.y];
        """
    )
    x, y, w, h = (round(float(v)) for v in rect)
    return x, y, w, h


def canvas_pixels(driver: Any) -> np.ndarray:
    """What OpenSeadragon drew: the drawer canvas, read back as PNG."""
    url = driver.execute_script(
        "return window.idrViewer.viewer.drawer.canvas.toDataURL('image/png');"
    )
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def screenshot(driver: Any) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))


def resized(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BOX), dtype=np.float64)


def similarity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean absolute difference in 0..255, Pearson correlation) of two equal-size images."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mad = float(np.abs(a - b).mean())
    corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return mad, corr


def expected_composite(server: Server, image_id: int, z: int, t: int, query: str) -> np.ndarray:
    """The whole plane as the server renders it, from the largest level of at most 1024 px."""
    with urllib.request.urlopen(f"{server.base}/webgateway/imgData/{image_id}/") as resp:
        doc = json.load(resp)
    resolutions = doc.get("resolutions") or {
        "0": {"sizeX": doc["size"]["width"], "sizeY": doc["size"]["height"]}
    }
    level, size = min(
        ((int(k), v) for k, v in resolutions.items() if max(v["sizeX"], v["sizeY"]) <= 1024),
        key=lambda kv: kv[0],
    )
    url = (
        f"{server.base}/webgateway/render_image_region/{image_id}/{z}/{t}/"
        f"?tile={level},0,0,{size['sizeX']},{size['sizeY']}"
    )
    return fetch_image(url + (f"&{query}" if query else ""))


def check_drawn(driver: Any, expected: np.ndarray) -> np.ndarray:
    """Assert the drawn canvas and the screenshot both show `expected`; returns the canvas crop."""
    x, y, w, h = image_rect(driver)
    assert w > 100 and h > 100, (x, y, w, h)
    canvas = canvas_pixels(driver)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    assert (x1 - x0) * (y1 - y0) >= 0.9 * w * h, "the image should be wholly in view at home zoom"
    drawn = canvas[y0:y1, x0:x1].astype(np.float64)
    assert drawn.std() > 5, "the canvas is blank"
    # The expected composite, scaled to the image's on-screen size and cropped like the canvas.
    exp = resized(expected, w, h)[y0 - y : y1 - y, x0 - x : x1 - x]
    mad, corr = similarity(drawn, exp)
    assert mad < 12 and corr > 0.95, (mad, corr)
    # The same from a real screenshot, on the middle half (controls float over the corners).
    osd = driver.find_element("id", "osd").rect
    shot = screenshot(driver)
    ox, oy = round(osd["x"]), round(osd["y"])
    cx0, cy0, cx1, cy1 = x0 + w // 4, y0 + h // 4, x0 + 3 * w // 4, y0 + 3 * h // 4
    seen = shot[oy + cy0 : oy + cy1, ox + cx0 : ox + cx1]
    mad, corr = similarity(seen, exp[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0])
    assert mad < 12 and corr > 0.95, ("screenshot", mad, corr)
    return drawn


def tile_urls(driver: Any, image_id: int, z: int, t: int) -> list[tuple[str, int]]:
    """(URL, status) of the page's tile requests for one plane, from Resource Timing."""
    entries = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => [e.name, e.responseStatus]);"
    )
    part = f"/webgateway/render_image_region/{image_id}/{z}/{t}/?tile="
    return [(str(u), int(s)) for u, s in entries if part in u]


def test_viewer_draws_tiles_and_controls_change_them(server: Server, browser: Any) -> None:
    driver = browser
    console_problems(driver)  # drop anything from before
    before = server.tile_count()
    driver.get(f"{server.base}/viewer/1001")
    query = wait_loaded(driver)

    # Tiles were requested from the webgateway, answered, and drawn as the server renders them.
    seen = tile_urls(driver, 1001, 0, 0)
    assert seen and {s for _, s in seen} == {200}, seen[:3]
    assert all("&c=" in u and "&m=c" in u for u, _ in seen), seen[:3]
    wait_for(lambda: server.tile_count() >= before + len(seen), "the server's access log")
    # The viewer starts from the image's own settings: the same picture as the server's default.
    default = expected_composite(server, 1001, 0, 0, "")
    first = check_drawn(driver, default)
    assert console_problems(driver) == []

    # Channel toggle: channel 1 off changes the image, to what the server renders without it.
    box = driver.find_element("css selector", '.channel[data-channel="1"] .channel-active')
    assert box.is_selected()
    box.click()
    query2 = wait_loaded(driver, query)
    assert "-1%7C" in query2 and "-1%7C" not in query
    without = check_drawn(driver, expected_composite(server, 1001, 0, 0, query2))
    assert similarity(first, without)[0] > 5, "toggling a channel did not change the image"
    assert server.tile_count() > before + len(seen)

    # Colour and window: change channel 2 to magenta with a narrower window.
    driver.execute_script(
        """
        const row = document.querySelector('.channel[data-channel="2"]');
        const set = (sel, v) => { const e = row.querySelector(sel); e.value = v;
                                  e.dispatchEvent(new Event('change')); };
        set('.channel-colour', '#ff00ff');
        set('.channel-end', String(Number(row.querySelector('.channel-start').value) + 500));
        """
    )
    query3 = wait_loaded(driver, query2)
    assert "FF00FF" in query3
    check_drawn(driver, expected_composite(server, 1001, 0, 0, query3))

    # Greyscale switch: m=g, and the picture has no colour.
    driver.find_element("id", "greyscale").click()
    query4 = wait_loaded(driver, query3)
    assert "m=g" in query4
    grey = check_drawn(driver, expected_composite(server, 1001, 0, 0, query4))
    assert np.abs(grey[..., 0] - grey[..., 1]).mean() < 3
    assert console_problems(driver) == []


def test_z_slider_requests_the_other_plane(server: Server, browser: Any) -> None:
    driver = browser
    console_problems(driver)
    driver.get(f"{server.base}/viewer/1002")
    query = wait_loaded(driver)
    z0 = int(driver.execute_script("return window.idrViewer.state.z;"))
    check_drawn(driver, expected_composite(server, 1002, z0, 0, query))
    z_max = int(driver.find_element("id", "z").get_attribute("max"))
    assert z_max == 8  # 9 planes
    target = 0 if z0 != 0 else z_max
    driver.execute_script(
        "const z = document.getElementById('z'); z.value = arguments[0];"
        "z.dispatchEvent(new Event('input'));",
        target,
    )
    wait_for(
        lambda: driver.execute_script("return document.body.dataset.plane;") == f"{target},0",
        "the plane to change",
    )
    wait_for(
        lambda: driver.execute_script("return document.body.dataset.state;") == "loaded",
        "the new plane's tiles",
    )
    assert tile_urls(driver, 1002, target, 0), "no tile of the new plane was requested"
    check_drawn(driver, expected_composite(server, 1002, target, 0, query))
    assert driver.find_element("id", "z-value").text == f"{target + 1}/9"
    assert console_problems(driver) == []


@pytest.mark.parametrize("image_id", IMAGES)
def test_every_image_draws_as_the_server_renders_it(
    server: Server, browser: Any, image_id: int
) -> None:
    driver = browser
    console_problems(driver)
    driver.get(f"{server.base}/viewer/{image_id}")
    wait_loaded(driver)
    z, t = (int(v) for v in driver.execute_script("return document.body.dataset.plane;").split(","))
    # The viewer starts from the image's own settings: what the server renders without any.
    check_drawn(driver, expected_composite(server, image_id, z, t, ""))
    tiles = tile_urls(driver, image_id, z, t)
    assert tiles and {s for _, s in tiles} == {200}, [u for u, s in tiles if s != 200][:3]
    assert console_problems(driver) == []


def test_odd_sized_pyramid_asks_only_for_stored_tiles(server: Server, browser: Any) -> None:
    """Level sizes 4097, 2048, 1024, …: the edge column OpenSeadragon's own arithmetic
    would add (2048.5 px → 9 columns of 256) is never requested."""
    driver = browser
    console_problems(driver)
    driver.get(f"{server.base}/viewer/{ODD}")
    query = wait_loaded(driver)
    # Zoom to the right edge at full resolution, where the rounding differs most.
    driver.execute_script(
        """
        const v = window.idrViewer.viewer;
        const item = v.world.getItemAt(0);
        const p = item.imageToViewportCoordinates(new OpenSeadragon.Point(4090, 2990));
        v.viewport.zoomTo(item.imageToViewportZoom(1), null, true);
        v.viewport.panTo(p, true);
        document.body.dataset.state = "loading";
        """
    )
    wait_for(
        lambda: any("tile=0,16," in u for u, _ in tile_urls(driver, ODD, 0, 0)),
        "the full-resolution edge column (16: one pixel wide) to be requested",
    )
    wait_for(
        lambda: driver.execute_script(
            "const v = window.idrViewer.viewer; return v.world.getItemAt(0).getFullyLoaded();"
        ),
        "the zoomed-in tiles",
    )
    tiles = tile_urls(driver, ODD, 0, 0)
    assert {s for _, s in tiles} == {200}, [u for u, s in tiles if s != 200][:3]
    # Every tile requested lies inside its stored level (a 404 would also show in the console).
    width, height = ODD_SIZE
    for url, _ in tiles:
        level, col, row = (int(v) for v in url.split("tile=")[1].split(",")[:3])
        assert col * 256 < width >> level and row * 256 < height >> level, url
    assert query
    assert console_problems(driver) == []


def test_t_slider(server: Server, browser: Any) -> None:
    driver = browser
    console_problems(driver)
    driver.get(f"{server.base}/viewer/1006")
    query = wait_loaded(driver)
    t_range = driver.find_element("id", "t")
    assert t_range.get_attribute("max") == "2" and t_range.get_attribute("disabled") is None
    z = int(driver.execute_script("return window.idrViewer.state.z;"))
    driver.execute_script(
        "const t = document.getElementById('t'); t.value = 2; t.dispatchEvent(new Event('input'));"
    )
    wait_for(
        lambda: driver.execute_script("return document.body.dataset.plane;") == f"{z},2",
        "the plane to change",
    )
    wait_for(
        lambda: driver.execute_script("return document.body.dataset.state;") == "loaded",
        "the new plane's tiles",
    )
    assert tile_urls(driver, 1006, z, 2)
    check_drawn(driver, expected_composite(server, 1006, z, 2, query))
    assert console_problems(driver) == []


def test_single_level_image_has_no_z_slider(server: Server, browser: Any) -> None:
    driver = browser
    driver.get(f"{server.base}/viewer/1003")
    wait_loaded(driver)
    assert driver.find_element("id", "z").get_attribute("disabled") == "true"
    assert console_problems(driver) == []


def test_index_page_thumbnails_link_to_viewers(server: Server, browser: Any) -> None:
    driver = browser
    console_problems(driver)
    driver.get(server.base + "/")  # a browser asking for / gets the index page
    links = driver.find_elements("css selector", "ul.images a")
    assert {a.get_attribute("href") for a in links} == {f"{server.base}/viewer/{i}" for i in IMAGES}
    wait_for(
        lambda: driver.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0);"
        ),
        "every thumbnail to load",
    )
    links[0].click()
    wait_loaded(driver)
    assert driver.current_url.startswith(f"{server.base}/viewer/")
    assert console_problems(driver) == []


def test_docs_page_renders_swagger_ui(server: Server, browser: Any) -> None:
    driver = browser
    console_problems(driver)
    status = urllib.request.urlopen(f"{server.base}/openapi.json", timeout=30).status
    assert status == 200
    driver.get(f"{server.base}/docs")
    wait_for(
        lambda: driver.find_elements("css selector", ".swagger-ui .info .title"),
        "Swagger UI to render the API title",
    )
    ops = wait_for(
        lambda: driver.find_elements("css selector", ".swagger-ui .opblock"),
        "the operations list",
    )
    assert len(ops) >= 3
    assert ("/openapi.json", 200) in server.requests()
    assert console_problems(driver) == []


# ---- under a path prefix, behind the shipped nginx ---------------------------------------------
PREFIX = "/idrserve"


@pytest.fixture(scope="module")
def prefixed(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """deploy/nginx with its path-prefix block on, in front of the demo server: the public
    base URL of idrserve under the prefix."""
    root = tmp_path_factory.mktemp("viewer_nginx")
    port = free_port()
    conf = root / "nginx"
    render_config(
        conf,
        listen=port,
        idrserve=server.port,
        omeroweb=free_port(),
        cache=root / "cache",
        path_prefix=True,
    )
    with (root / "nginx.log").open("wb") as log:
        proc = subprocess.Popen(
            nginx_args(conf, "daemon off;"), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until(port, f"{PREFIX}/healthz", proc, "nginx")
            yield f"http://127.0.0.1:{port}{PREFIX}"
        finally:
            stop(proc)


def resources(driver: Any) -> list[tuple[str, int]]:
    """(URL, status) of every resource the page fetched, from Resource Timing."""
    entries = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => [e.name, e.responseStatus]);"
    )
    return [(str(u), int(s)) for u, s in entries]


def test_viewer_under_a_path_prefix(server: Server, prefixed: str, browser: Any) -> None:
    driver = browser
    console_problems(driver)
    driver.get(f"{prefixed}/viewer/1002")
    wait_loaded(driver)
    z, t = (int(v) for v in driver.execute_script("return document.body.dataset.plane;").split(","))
    tiles = tile_urls(driver, 1002, z, t)
    assert tiles and {s for _, s in tiles} == {200}, tiles[:3]
    assert all(u.startswith(f"{prefixed}/webgateway/") for u, _ in tiles), tiles[:3]
    # Everything the page loaded (scripts, styles, imgData, tiles, OpenSeadragon's button
    # images) came from under the prefix and answered.
    fetched = resources(driver)
    assert fetched and all(u.startswith(prefixed + "/") and s == 200 for u, s in fetched), [
        (u, s) for u, s in fetched if not u.startswith(prefixed + "/") or s != 200
    ][:3]
    assert any("/webgateway/imgData/1002/" in u for u, _ in fetched)
    check_drawn(driver, expected_composite(server, 1002, z, t, ""))
    assert console_problems(driver) == []


def test_index_and_docs_under_a_path_prefix(prefixed: str, browser: Any) -> None:
    driver = browser
    console_problems(driver)
    driver.get(prefixed + "/")
    links = driver.find_elements("css selector", "ul.images a")
    assert {a.get_attribute("href") for a in links} == {f"{prefixed}/viewer/{i}" for i in IMAGES}
    wait_for(
        lambda: driver.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0);"
        ),
        "every thumbnail to load under the prefix",
    )
    links[-1].click()
    wait_loaded(driver)
    assert driver.current_url.startswith(f"{prefixed}/viewer/")
    driver.find_element("css selector", "header h1 a").click()  # back to the index
    wait_for(lambda: driver.current_url == f"{prefixed}/viewer/", "the index link")
    driver.get(f"{prefixed}/docs")
    ops = wait_for(
        lambda: driver.find_elements("css selector", ".swagger-ui .opblock"),
        "Swagger UI's operations under the prefix",
    )
    assert len(ops) >= 3
    assert (f"{prefixed}/openapi.json", 200) in resources(driver)
    # "Try it out" sends requests to the document's server: the public base, prefix included.
    servers = driver.find_elements("css selector", ".swagger-ui .servers select option")
    assert [o.get_attribute("value") for o in servers] == [prefixed]
    assert console_problems(driver) == []
