"""OMERO.iviewer 0.19.1, the real bundle, in headless Chromium through the shipped nginx
configuration: how much work is still left to OMERO.web?

nginx (deploy/nginx/idrserve.conf rendered into a temporary prefix, as test_nginx.py does) sends
the URLs it routes to idrserve, serving two fixture OME-Zarr images, and everything else to a
stand-in for OMERO.web (omeroweb_stub.py) that serves iviewer's page and static files from the
PyPI wheel (iviewer_wheel.py: fetched with pip, pinned by SHA-256) and counts every other
request. A scripted session then does what a visitor does: open an image, zoom in and out, pan,
change z and t, toggle a channel, change a channel's window, switch to greyscale, pick a LUT,
open the histogram (of an untiled image: iviewer disables it for tiled ones). The stand-in
must have had **no request** beyond the page and its files, and the console no error
(`omeroweb_stub.KEPT`, what the configuration would leave to OMERO.web on purpose, is empty).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pytest

from idrserve import demo

from . import iviewer_wheel
from .live_server import idrserve
from .omeroweb_stub import KEPT, OmeroWebStub, page_keys_missing
from .test_nginx import free_port, nginx_args, nginx_binary, render_config, stop, wait_until
from .test_viewer_browser import CHROMEDRIVER, CHROMIUM, _find

pytestmark = pytest.mark.slow

TILED = 2001  # 2048², four levels: iviewer asks for tiles
UNTILED = 2002  # 512² in one level: iviewer asks for whole planes and allows the histogram
STEP_TIMEOUT_S = 15
# Where to save a screenshot of iviewer showing the tiled image (docs/screenshots/iviewer.png
# was made so); unset, none is taken.
SCREENSHOT_ENV = "IDRSERVE_TEST_IVIEWER_SCREENSHOT"


def write_image(path: Path, image_id: int, size: int, levels: int) -> None:
    """A t,c,z,y,x uint16 OME-Zarr (NGFF 0.4): 2 t, 3 c, 2 z, `size`², `levels` levels.

    The demo's synthetic cells (nuclei, cytoplasm, filaments), shifted a little per z and t so
    that every plane is a different picture.
    """
    import zarr

    nt, nc, nz = 2, 3, 2
    rng = np.random.default_rng(image_id)
    cells = demo._cells(rng, 512, 300)
    if size != 512:
        cells = tuple(demo._upsample(ch, size // 512) for ch in cells)
    data = np.empty((nt, nc, nz, size, size), np.uint16)
    for t in range(nt):
        for c in range(nc):
            for z in range(nz):
                plane = np.roll(cells[c], (size // 20 * z, size // 12 * t), axis=(0, 1))
                data[t, c, z] = (200 + 3000 * plane).astype(np.uint16)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for level in range(levels):
        arr = root.create_array(
            str(level), shape=data.shape, chunks=(1, 1, 1, 256, 256), dtype="uint16"
        )
        arr[...] = data
        f = float(2**level)
        scale = [1.0, 1.0, 1.0, f * 0.5, f * 0.5]
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
        data = data[..., ::2, ::2]
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"
    ]
    channels = [
        {
            "label": label,
            "color": colour,
            "active": True,
            "window": {"min": 0, "max": 65535, "start": 200, "end": 3200},
        }
        for label, colour in (("DAPI", "0000FF"), ("GFP", "00FF00"), ("RFP", "FF0000"))
    ]
    name = f"session-{image_id}"
    multiscale = {"version": "0.4", "name": name, "axes": axes, "datasets": datasets}
    rdefs = {"model": "color", "defaultZ": 0, "defaultT": 0}
    root.attrs.update(
        {
            "multiscales": [multiscale],
            "omero": {"id": image_id, "name": name, "channels": channels, "rdefs": rdefs},
        }
    )


@dataclass
class Site:
    base: str  # nginx
    stub: OmeroWebStub
    idrserve: str  # the idrserve behind it, for the built-in viewer's screenshot


@pytest.fixture(scope="module")
def wheel_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        wheel = iviewer_wheel.fetch_wheel()
    except iviewer_wheel.WheelError as exc:
        pytest.fail(
            f"the iviewer session runs OMERO.iviewer's PyPI wheel: {exc}. "
            "`python -m tests.integration.iviewer_wheel` fetches it into "
            "~/.cache/idrserve/iviewer/ (bash scripts/test.sh does)"
        )
    return iviewer_wheel.extract(wheel, tmp_path_factory.mktemp("iviewer-wheel"))


@pytest.fixture(scope="module")
def site(wheel_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    nginx_binary()  # fails, saying how to install it, before anything starts
    root = tmp_path_factory.mktemp("ivsession")
    write_image(root / "zarr" / f"{TILED}.zarr", TILED, 2048, 4)
    write_image(root / "zarr" / f"{UNTILED}.zarr", UNTILED, 512, 1)
    stub = OmeroWebStub(wheel_root, free_port())
    stub.start()
    try:
        with idrserve(root / "zarr", root / "idrserve.log") as upstream:
            port = free_port()
            conf = root / "nginx"
            render_config(
                conf,
                listen=port,
                idrserve=int(upstream.rsplit(":", 1)[1]),
                omeroweb=stub.port,
                cache=root / "cache",
            )
            with (root / "nginx.log").open("wb") as log:
                proc = subprocess.Popen(
                    nginx_args(conf, "daemon off;"), stdout=log, stderr=subprocess.STDOUT
                )
                try:
                    wait_until(port, "/healthz", proc, "nginx")
                    yield Site(f"http://127.0.0.1:{port}", stub, upstream)
                finally:
                    stop(proc)
    finally:
        stub.stop()


def test_stub_page_sets_every_key_iviewers_view_sets(wheel_root: Path) -> None:
    assert page_keys_missing(wheel_root) == set()


def test_a_wheel_that_does_not_match_the_pin_is_refused(
    wheel_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip, offered the genuine wheel from a local directory, refuses it under another pin;
    a corrupt cached copy is replaced, never used."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(iviewer_wheel.cache_dir()))
    with pytest.raises(iviewer_wheel.WheelError, match="pip download"):
        iviewer_wheel.fetch_wheel(tmp_path, expected="0" * 64)
    assert not (tmp_path / iviewer_wheel.WHEEL).exists()
    (tmp_path / iviewer_wheel.WHEEL).write_bytes(b"not the wheel")
    with pytest.raises(iviewer_wheel.WheelError, match="expected the pinned"):
        iviewer_wheel.extract(tmp_path / iviewer_wheel.WHEEL, tmp_path / "out")
    fetched = iviewer_wheel.fetch_wheel(tmp_path)
    assert iviewer_wheel.sha256_of(fetched) == iviewer_wheel.SHA256


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver_path = _find(CHROMIUM), _find(CHROMEDRIVER)
    if chromium is None or driver_path is None:
        pytest.fail(
            "the iviewer session needs Debian's `chromium` and `chromium-driver` "
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
        "--window-size=1400,900",  # iviewer's three panels side by side
        "--force-device-scale-factor=1",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    # Resource Timing, from which each step reads what the page fetched, keeps only 250 entries
    # unless told otherwise; a session fetches more tiles than that.
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": "performance.setResourceTimingBufferSize(100000);"},
    )
    try:
        yield driver
    finally:
        driver.quit()


TILE = re.compile(r"/webgateway/render_image_region/(\d+)/(\d+)/(\d+)/\?(.*)$")
PLANE = re.compile(r"/webgateway/render_image/(\d+)/(\d+)/(\d+)/\?(.*)$")


def query_of(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def tiles(urls: list[str], image_id: int, z: int | None = None, t: int | None = None) -> list[str]:
    """The tile and plane URLs among `urls` for one image (and plane, when given)."""
    out = []
    for url in urls:
        m = TILE.search(url) or PLANE.search(url)
        if not m or int(m.group(1)) != image_id:
            continue
        if (z is None or int(m.group(2)) == z) and (t is None or int(m.group(3)) == t):
            out.append(url)
    return out


def channels(url: str) -> dict[int, str]:
    """`c=` of a rendering URL as {channel number: entry}, inactive ones with their minus."""
    entries = query_of(url).get("c", "").split(",")
    return {abs(int(e.split("|")[0])): e for e in entries if e}


def save_screenshot(driver: Any, path: Path) -> None:
    """The browser window as a small PNG (a 128-colour palette: 170 kB instead of 700)."""
    from PIL import Image

    img = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(128, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


class Session:
    """Drives iviewer one step at a time, each step waiting for what it should fetch."""

    def __init__(self, driver: Any, site: Site) -> None:
        self.driver, self.site = driver, site
        self.console: list[dict[str, Any]] = []
        self.steps: list[str] = []

    def report(self) -> str:
        lines = [f"steps done: {', '.join(self.steps) or 'none'}", "OMERO.web stand-in got:"]
        lines += [f"  [{r.kind}] {r}" for r in self.site.stub.snapshot()]
        lines += ["console:"] + [f"  {e['level']} {e['message']}" for e in self.console]
        return "\n".join(lines)

    def fetched(self) -> list[str]:
        """Every URL the page fetched since it loaded (Resource Timing), decoded."""
        names = self.driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name);"
        )
        return [unquote(str(n)) for n in names]

    def wait(self, what: str, check: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.1)
        self.console += self.driver.get_log("browser")
        raise AssertionError(f"timed out waiting for {what}\n{self.report()}")

    def settle(self) -> None:
        """Wait until the page has fetched nothing new for half a second."""
        last, since = -1, time.monotonic()
        deadline = since + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            n = len(self.fetched()) + len(self.site.stub.snapshot())
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since > 0.5:
                return
            time.sleep(0.1)

    def open(self, image_id: int, expect: Callable[[list[str]], Any]) -> None:
        """Load iviewer's page for one image, waiting until what it fetched satisfies `expect`."""
        self.step(
            f"open {image_id}",
            lambda: self.driver.get(f"{self.site.base}/iviewer/?images={image_id}"),
            expect,
            new_page=True,
        )

    def step(
        self,
        name: str,
        action: Callable[[], Any],
        expect: Callable[[list[str]], Any],
        new_page: bool = False,
    ) -> Any:
        """Run `action`, then wait until the URLs fetched after it satisfy `expect`."""
        before = 0 if new_page else len(self.fetched())
        action()
        found = self.wait(name, lambda: expect(self.fetched()[before:]))
        self.settle()
        self.console += self.driver.get_log("browser")
        self.steps.append(name)
        return found

    def click(self, css: str, index: int = 0) -> None:
        self.wait(css, lambda: self.driver.find_elements("css selector", css))
        self.driver.find_elements("css selector", css)[index].click()

    def zoom(self) -> int:
        value = self.driver.find_element("css selector", ".ol-zoom-display").get_attribute("value")
        return int(float(value))


def test_iviewer_session_reaches_omero_web_only_where_nginx_keeps_it(
    site: Site, browser: Any
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.get_log("browser")  # drop anything from before
    s = Session(driver, site)

    # Open the tiled image: its default plane (z=0, t=0) arrives as tiles.
    s.open(TILED, lambda urls: tiles(urls, TILED, 0, 0))
    s.wait(
        "three channel buttons",
        lambda: len(driver.find_elements("css selector", "button.channel")) == 3,
    )
    shot = os.environ.get(SCREENSHOT_ENV)
    if shot:
        save_screenshot(driver, Path(shot))
    first_zoom = s.zoom()

    # Zoom in with "+" to full resolution: tiles of a finer level than the opening ones.
    def levels(urls: list[str]) -> set[str]:
        return {query_of(u)["tile"].split(",")[0] for u in tiles(urls, TILED) if "tile=" in u}

    def zoom_until(button: str, done: Callable[[int], bool]) -> None:
        """Click a zoom button, waiting for each step to land, until `done(zoom percentage)`."""
        for _ in range(20):
            now = s.zoom()
            if done(now):
                return
            s.click(button)
            s.wait(f"{button} to change the zoom", lambda now=now: s.zoom() != now)
        raise AssertionError(f"{button}: still at {s.zoom()} %\n{s.report()}")

    opening_levels = levels(s.fetched())
    s.step(
        "zoom in",
        lambda: zoom_until(".ol-zoom-in", lambda zoom: zoom >= 100),
        lambda urls: levels(urls) - opening_levels,
    )

    # Pan: drag the image up and left; tiles that were out of view arrive.
    def drag() -> None:
        # OpenLayers pans on a run of pointer moves with the button down, not on one jump.
        viewport = driver.find_element("css selector", ".ol-viewport")
        chain = ActionChains(driver).move_to_element(viewport).click_and_hold()
        for _ in range(10):
            chain = chain.move_by_offset(-45, -35).pause(0.02)
        chain.release().perform()

    s.step("pan", drag, lambda urls: tiles(urls, TILED, 0, 0))

    # Zoom out with "-", past where it started.
    s.step(
        "zoom out",
        lambda: zoom_until(".ol-zoom-out", lambda zoom: zoom < first_zoom),
        lambda urls: True,
    )

    # z up one plane, then t on one: tiles of each new plane.
    s.step(
        "z",
        lambda: s.click(".plane-slider .glyphicon-chevron-up"),
        lambda urls: tiles(urls, TILED, 1, 0),
    )
    s.step(
        "t",
        lambda: s.click(".time-slider .glyphicon-chevron-right"),
        lambda urls: tiles(urls, TILED, 1, 1),
    )

    # Channel 1 off: tiles that no longer ask for it as active.
    s.step(
        "channel off",
        lambda: s.click("button.channel", 0),
        lambda urls: [u for u in tiles(urls, TILED, 1, 1) if channels(u).get(1, "-")[0] == "-"],
    )

    # Channel 2's window: a new end typed in (Enter applies it), 200:1500.
    def set_end(index: int, value: str) -> None:
        field = driver.find_elements("css selector", ".channel-end")[index]
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(value, Keys.ENTER)

    s.step(
        "window",
        lambda: set_end(1, "1500"),
        lambda urls: [
            u for u in tiles(urls, TILED) if channels(u).get(2, "").startswith("2|200:1500")
        ],
    )

    # Channel 3 gets a LUT from its colour menu.
    def pick_lut() -> None:
        row = driver.find_elements("css selector", ".channel-range")[2]
        row.find_element("css selector", ".dropdown-toggle").click()
        fire = '.luts-item[title="fire"]'
        s.wait("the LUT menu", lambda: row.find_elements("css selector", fire))
        row.find_element("css selector", fire).click()

    s.step(
        "LUT",
        pick_lut,
        lambda urls: [u for u in tiles(urls, TILED) if "$fire.lut" in channels(u).get(3, "")],
    )

    s.step(
        "greyscale",
        lambda: driver.find_element("xpath", "//label[contains(., 'Grayscale')]/input").click(),
        lambda urls: [u for u in tiles(urls, TILED) if query_of(u).get("m") == "g"],
    )

    # The histogram is offered for untiled images only: open one (whole planes), switch it on.
    s.open(UNTILED, lambda urls: tiles(urls, UNTILED, 0, 0))
    s.step(
        "histogram",
        lambda: driver.find_element("xpath", "//label[contains(., 'Histogram')]/input").click(),
        lambda urls: [u for u in urls if f"/webgateway/histogram_json/{UNTILED}/" in u],
    )
    s.wait(
        "the histogram's curve",
        lambda: driver.execute_script(
            "const p = document.querySelector('.histogram path.histogram-line');"
            "return p && p.getAttribute('d');"
        ),
    )

    work = site.stub.work()
    unexpected = [r for r in work if r.kept is None]
    errors = [e for e in s.console if e["level"] == "SEVERE"]
    print(f"OMERO.web requests in the session: {len(work)}\n{s.report()}")
    assert not unexpected and not errors, (
        f"{len(unexpected)} request(s) reached OMERO.web that idrserve should answer, "
        f"{len(errors)} console error(s)\n{s.report()}"
    )
    if shot:
        # The built-in viewer on the same image, for docs/iviewer.md's side-by-side pair; from
        # idrserve directly, after the count (nginx sends /viewer/ to OMERO.web in this site).
        driver.get(f"{site.idrserve}/viewer/{TILED}")
        s.wait(
            "the built-in viewer's tiles",
            lambda: driver.execute_script(
                "return performance.getEntriesByType('resource').filter("
                f"e => e.name.includes('/render_image_region/{TILED}/')"
                " || e.name.includes('/render_image_tile/')).length >= 4;"
            ),
        )
        time.sleep(1.0)  # let OpenSeadragon finish blending the tiles it has in
        save_screenshot(driver, Path(shot).with_name("viewer-same-image.png"))
    # The kept list only shrinks: once idrserve answers one of them and nginx routes it there,
    # it must leave KEPT (and docs/iviewer.md's table).
    assert {r.kept for r in work} == {name for name, _, _ in KEPT}, s.report()
