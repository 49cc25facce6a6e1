"""The viewer's controls in a real headless Chromium against a real `idrserve demo`.

Each control must change the tile URLs OpenSeadragon asks for in the expected way (read back
from the page's Resource Timing entries) and the picture to the server's own rendering of the
new settings; the view state must survive a link; the pixel readout must give the stored
values; the navigator, buttons and panels must never cover the image, at 1400×900 and on a
390×844 phone; and the console must stay clean throughout. Same browser and server set-up as
test_viewer_browser.py (Debian's chromium and chromium-driver; missing is a failure).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.keys import Keys

from .test_viewer_browser import (
    Server,
    canvas_pixels,
    check_drawn,
    console_problems,
    demo_server,
    expected_composite,
    fetch_image,
    headless_chromium,
    similarity,
    wait_for,
    wait_loaded,
)

pytestmark = pytest.mark.slow

DESKTOP, PHONE = (1400, 900), (390, 844)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with demo_server(tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as driver:
        yield driver


@pytest.fixture
def driver(browser: Any) -> Iterator[Any]:
    """The browser at 1400×900 CSS pixels with a clean console; emulation reset afterwards."""
    viewport(browser, *DESKTOP)
    console_problems(browser)
    try:
        yield browser
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def viewport(driver: Any, width: int, height: int) -> None:
    """Exact CSS viewport size (a window size would include the browser's own frame)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500},
    )


def open_viewer(driver: Any, server: Server, path: str) -> str:
    """Load a viewer URL from scratch (a fragment-only change would not reload the page)."""
    driver.get("about:blank")
    driver.get(f"{server.base}/viewer/{path}")
    query = wait_loaded(driver)
    driver.execute_script("performance.setResourceTimingBufferSize(100000);")
    return query


def forget_requests(driver: Any) -> None:
    driver.execute_script("performance.clearResourceTimings();")


def requests_made(driver: Any, part: str = "") -> list[tuple[str, int]]:
    """(decoded URL, status) of every request since `forget_requests` containing `part`."""
    entries = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => [e.name, e.responseStatus]);"
    )
    return [(unquote(str(u)), int(s)) for u, s in entries if part in unquote(str(u))]


def tile_requests(driver: Any) -> list[str]:
    """Tile URLs (webgateway or IIIF) requested since `forget_requests`, all answered 200."""
    tiles = [
        (u, s) for u, s in requests_made(driver) if "/render_image_region/" in u or "/iiif/3/" in u
    ]
    assert tiles, "no tile was requested"
    assert {s for _, s in tiles} == {200}, [t for t in tiles if t[1] != 200][:3]
    return [u for u, _ in tiles]


def change(driver: Any, selector: str, value: object, event: str = "change") -> None:
    driver.execute_script(
        "const e = document.querySelector(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event(arguments[2], {bubbles: true}));",
        selector,
        str(value),
        event,
    )


def control(driver: Any, selector: str, prop: str = "value") -> Any:
    return driver.execute_script(
        "return document.querySelector(arguments[0])[arguments[1]];", selector, prop
    )


def body_data(driver: Any, key: str) -> str | None:
    value = driver.execute_script("return document.body.dataset[arguments[0]];", key)
    return None if value is None else str(value)


def wait_plane(driver: Any, plane: str) -> None:
    wait_for(lambda: body_data(driver, "plane") == plane, f"plane {plane}")
    wait_for(lambda: body_data(driver, "state") == "loaded", f"the tiles of plane {plane}")


def press(driver: Any, *keys: str) -> None:
    """Keys as a user types them with nothing focused (so the page's shortcuts get them)."""
    driver.execute_script("document.activeElement && document.activeElement.blur();")
    ActionChains(driver).send_keys(*keys).perform()


def rendered_plane(server: Server, image_id: int, z: int, t: int, query: str) -> np.ndarray:
    """The server's whole-plane rendering (render_image honours p=; tiles do not)."""
    return fetch_image(f"{server.base}/webgateway/render_image/{image_id}/{z}/{t}/?{query}")


def wait_luts(driver: Any) -> None:
    wait_for(
        lambda: driver.execute_script(
            "return [...document.querySelectorAll('.channel-lut')].every(s => !s.hidden && "
            "[...s.options].some(o => o.value === 'fire.lut'));"
        ),
        "the LUT lists",
    )


# ---- every control changes the tile URLs as expected -------------------------------------------


def test_each_control_changes_the_tile_urls(server: Server, driver: Any) -> None:
    """On the z-stack (2 channels, 9 planes): window sliders, LUT, colour, on/off, greyscale,
    Z by keyboard, projection; each gives new tile URLs and the server's picture of them."""
    q = open_viewer(driver, server, "1002")
    assert body_data(driver, "plane") == "4,0"  # the default plane, sizeZ // 2
    ch1, ch2 = '.channel[data-channel="1"]', '.channel[data-channel="2"]'

    def step(action: Callable[[], None], expect: str, z: int = 4) -> np.ndarray:
        nonlocal q
        forget_requests(driver)
        action()
        q = wait_loaded(driver, q)
        tiles = tile_requests(driver)
        assert all(f"/render_image_region/1002/{z}/0/?tile=" in u for u in tiles), tiles[:2]
        assert all(expect in u for u in tiles), (expect, tiles[:2])
        return check_drawn(driver, expected_composite(server, 1002, z, 0, q))

    def set_to(selector: str, value: object, event: str = "change") -> Callable[[], None]:
        return lambda: change(driver, selector, value, event)

    def click(selector: str) -> Callable[[], None]:
        return lambda: driver.find_element("css selector", selector).click()

    # The end slider of channel 1, then the start slider of channel 2 (input events, as a drag).
    step(
        set_to(f"{ch1} .channel-end-slider", 1500, "input"), "c=1|100:1500$0000FF,2|80:1200$FFFF00&"
    )
    assert control(driver, f"{ch1} .channel-end") == "1500"  # the number box follows
    step(set_to(f"{ch2} .channel-start-slider", 300, "input"), "2|300:1200$FFFF00&")
    # A LUT for channel 1, from /webgateway/luts/.
    wait_luts(driver)
    step(set_to(f"{ch1} .channel-lut", "fire.lut"), "c=1|100:1500$fire.lut,")
    # A colour for channel 2; then channel 1's colour replaces its LUT.
    step(set_to(f"{ch2} .channel-colour", "#ff00ff"), "2|300:1200$FF00FF&")
    step(set_to(f"{ch1} .channel-colour", "#00ffff"), "c=1|100:1500$00FFFF,")
    assert control(driver, f"{ch1} .channel-lut") == ""
    # Channel 2 off; greyscale and back.
    step(click(f"{ch2} .channel-active"), ",-2|300:1200$FF00FF&")
    step(click("#greyscale"), "&m=g&")
    # Back to colour: the same URLs as before, which the browser has cached.
    click("#greyscale")()
    q = wait_loaded(driver, q)
    assert "&m=c&" in q
    check_drawn(driver, expected_composite(server, 1002, 4, 0, q))
    # ↑ is the next Z plane.
    forget_requests(driver)
    press(driver, Keys.ARROW_UP)
    wait_plane(driver, "5,0")
    tiles = tile_requests(driver)
    assert all("/render_image_region/1002/5/0/" in u for u in tiles), tiles[:2]
    plane = check_drawn(driver, expected_composite(server, 1002, 5, 0, q))
    assert driver.find_element("id", "z-value").text == "6/9"

    # Maximum-intensity projection: IIIF tiles carrying the same settings and p=intmax.
    forget_requests(driver)
    change(driver, "#projection", "intmax")
    q = wait_loaded(driver, q)
    assert q.endswith("&p=intmax")
    tiles = tile_requests(driver)
    prefix = "/iiif/3/1002;c=1|100:1500$00FFFF,-2|300:1200$FF00FF;m=c;p=intmax;t=0;q=0.9/"
    assert all(prefix in u and u.endswith("/0/default.jpg") for u in tiles), tiles[:2]
    assert control(driver, "#z", "disabled") is True
    projected = check_drawn(driver, rendered_plane(server, 1002, 5, 0, q))
    assert similarity(projected, plane)[0] > 3, "the projection looks like the plane"
    # And back to the plane (tiles the browser has cached).
    change(driver, "#projection", "")
    q = wait_loaded(driver, q)
    assert "&p=" not in q and control(driver, "#z", "disabled") is False
    check_drawn(driver, expected_composite(server, 1002, 5, 0, q))
    assert console_problems(driver) == []


def test_playback_and_keyboard(server: Server, driver: Any) -> None:
    """On the time-lapse (Z 3, T 3): play T through every timepoint and around, pause; the
    arrows and space; play Z."""
    open_viewer(driver, server, "1006")
    assert body_data(driver, "plane") == "1,0"
    driver.find_element("id", "t-play").click()
    assert control(driver, "#t-play", "ariaPressed") == "true"
    for t in (1, 2, 0):  # in order, wrapping round, each drawn before the next
        wait_plane(driver, f"1,{t}")
        assert requests_made(driver, f"/render_image_region/1006/1/{t}/")
    driver.find_element("id", "t-play").click()
    assert control(driver, "#t-play", "ariaPressed") == "false"
    paused = body_data(driver, "plane")
    time.sleep(1.5)
    assert body_data(driver, "plane") == paused
    assert paused is not None
    t = int(paused.split(",")[1])

    press(driver, Keys.ARROW_RIGHT)
    wait_plane(driver, f"1,{min(t + 1, 2)}")
    press(driver, Keys.ARROW_LEFT, Keys.ARROW_LEFT, Keys.ARROW_LEFT)
    wait_plane(driver, "1,0")  # stops at the first timepoint
    press(driver, Keys.ARROW_UP)
    wait_plane(driver, "2,0")
    press(driver, Keys.ARROW_DOWN, Keys.ARROW_DOWN)
    wait_plane(driver, "0,0")
    check_drawn(driver, expected_composite(server, 1006, 0, 0, body_data(driver, "query") or ""))
    # Space plays T; again pauses.
    press(driver, Keys.SPACE)
    assert control(driver, "#t-play", "ariaPressed") == "true"
    wait_plane(driver, "0,1")
    press(driver, Keys.SPACE)
    assert control(driver, "#t-play", "ariaPressed") == "false"
    # Play Z.
    start = body_data(driver, "plane")
    assert start is not None
    driver.find_element("id", "z-play").click()
    wait_plane(driver, f"1,{start.split(',')[1]}")
    driver.find_element("id", "z-play").click()
    assert control(driver, "#z-play", "ariaPressed") == "false"
    assert console_problems(driver) == []


# ---- the view state in the URL -----------------------------------------------------------------


def drawn_tiles(driver: Any) -> list[str]:
    return sorted(
        driver.execute_script(
            "const v = window.idrViewer.viewer;"
            "return v.world.getItemAt(v.world.getItemCount() - 1).getTilesToDraw()"
            ".map(t => t.tile.getUrl());"
        )
    )


def settled_hash(driver: Any) -> str:
    """The fragment once the view has stopped moving and the tiles are drawn."""

    def stable() -> str | None:
        first = driver.execute_script("return location.hash;")
        time.sleep(0.5)
        second = driver.execute_script("return location.hash;")
        loaded = body_data(driver, "state") == "loaded"
        return str(second) if first == second and loaded else None

    return str(wait_for(stable, "the view to settle"))


def test_url_state_round_trip(server: Server, driver: Any) -> None:
    """Settings and a zoomed view → the link → a fresh page shows the same controls and asks
    for the same tiles; an edited fragment is followed; a projection survives too."""
    q = open_viewer(driver, server, "1002")
    change(driver, "#z", 6, "input")
    wait_plane(driver, "6,0")
    driver.find_element("css selector", '.channel[data-channel="2"] .channel-active').click()
    change(driver, '.channel[data-channel="1"] .channel-start', 300)
    change(driver, '.channel[data-channel="1"] .channel-end', 1800)
    wait_luts(driver)
    change(driver, '.channel[data-channel="1"] .channel-lut', "fire.lut")
    q = wait_loaded(driver, q)
    assert "1|300:1800$fire.lut,-2|" in unquote(q)
    # Zoom in with the mouse wheel, off centre: the fragment gains the view.
    canvas = driver.find_element("css selector", "#osd .openseadragon-canvas")
    origin = ScrollOrigin.from_element(canvas, 80, -60)
    home = float(driver.execute_script(
        "const v = window.idrViewer.viewer; const i = v.world.getItemAt(0);"
        "return i.viewportToImageZoom(v.viewport.getHomeZoom());"
    ))  # fmt: skip
    # OpenSeadragon zooms 1.2× per wheel event; on a loaded machine Chromium may coalesce
    # events, so wheel until the settled view is past 1.5× home (3 events when none is lost).
    zoom, link = home, ""
    for _ in range(8):
        ActionChains(driver).scroll_from_origin(origin, 0, -200).perform()
        link = settled_hash(driver)
        if "zoom=" in link:
            zoom = float(link.rsplit("zoom=", 1)[1])
        if zoom > 1.5 * home:
            break
    assert re.search(
        r"#z=6&t=0&c=1\|300:1800\$fire\.lut,-2\|80:1200\$FFFF00&m=c&x=[\d.]+&y=[\d.]+&zoom=[\d.]+$",
        link,
    ), link
    assert zoom > 1.5 * home
    tiles, picture = drawn_tiles(driver), canvas_pixels(driver)

    open_viewer(driver, server, "1002" + link)
    assert body_data(driver, "query") == q
    assert control(driver, "#z") == "6" and driver.find_element("id", "z-value").text == "7/9"
    assert control(driver, '.channel[data-channel="1"] .channel-active', "checked") is True
    assert control(driver, '.channel[data-channel="2"] .channel-active', "checked") is False
    assert control(driver, '.channel[data-channel="1"] .channel-start') == "300"
    assert control(driver, '.channel[data-channel="1"] .channel-end') == "1800"
    assert control(driver, '.channel[data-channel="1"] .channel-end-slider') == "1800"
    assert control(driver, '.channel[data-channel="1"] .channel-lut') == "fire.lut"
    assert control(driver, "#greyscale", "checked") is False
    assert control(driver, "#projection") == ""
    assert drawn_tiles(driver) == tiles
    # The same picture, up to the sub-pixel placement the rounded centre and zoom allow.
    mad, corr = similarity(canvas_pixels(driver), picture)
    assert mad < 4 and corr > 0.97, (mad, corr)
    assert settled_hash(driver) == link  # rewritten the same: a stable link

    # A fragment edited in the address bar is followed without a reload.
    driver.execute_script("location.hash = 'z=2&t=0&c=1|100:2500$0000FF,2|80:1200$FFFF00&m=g';")
    q2 = wait_loaded(driver, q)
    assert body_data(driver, "plane") == "2,0" and "&m=g&" in q2
    assert control(driver, "#greyscale", "checked") is True
    assert control(driver, '.channel[data-channel="2"] .channel-active', "checked") is True
    assert control(driver, '.channel[data-channel="1"] .channel-lut') == ""
    check_drawn(driver, expected_composite(server, 1002, 2, 0, q2))

    # A projection in a link: the select shows it, the tiles are projected.
    forget_requests(driver)
    open_viewer(driver, server, "1002#p=intmean")
    assert control(driver, "#projection") == "intmean"
    assert all(";p=intmean;" in u for u in tile_requests(driver))
    # Nonsense is ignored rather than breaking the page.
    open_viewer(driver, server, "1002#z=99&c=7|x:y$nope,1|5:1$00FF00&p=bogus&zoom=-1")
    assert body_data(driver, "plane") == "4,0" and control(driver, "#projection") == ""
    assert console_problems(driver) == []


# ---- pixel values, scale bar, the image panel ---------------------------------------------------


def pointer_to_pixel(driver: Any, x: float, y: float) -> None:
    """Move the mouse over image pixel (x, y) (full-resolution coordinates)."""
    canvas, dx, dy = pixel_offset(driver, x, y)
    ActionChains(driver).move_to_element_with_offset(canvas, dx, dy).perform()


def pixel_offset(driver: Any, x: float, y: float) -> tuple[Any, int, int]:
    """The canvas element and the offset from its centre of image pixel (x, y)."""
    canvas = driver.find_element("css selector", "#osd .openseadragon-canvas")
    ex, ey, w, h = driver.execute_script(
        "const v = window.idrViewer.viewer; const i = v.world.getItemAt(0);"
        "const p = i.imageToViewerElementCoordinates("
        "  new OpenSeadragon.Point(arguments[0], arguments[1]));"
        "const r = v.canvas.getBoundingClientRect(); return [p.x, p.y, r.width, r.height];",
        x,
        y,
    )
    return canvas, round(ex - w / 2), round(ey - h / 2)


def stored_values(
    server: Server, image_id: int, x: int, y: int, z: int = 0, t: int = 0
) -> list[float]:
    url = f"{server.base}/api/v1/images/{image_id}/region?t={t}&z={z}&y={y}&x={x}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return [float(v) for v in np.load(io.BytesIO(resp.read()))]


def test_pixel_value_readout(server: Server, driver: Any) -> None:
    """The float image: the values shown are the stored ones at the pixel under the pointer,
    read as one 1×1 region per resting position (debounced)."""
    open_viewer(driver, server, "1004")
    forget_requests(driver)
    # A quick sweep that rests only at its end: only the last pixel's values are asked for.
    sweep = ActionChains(driver, duration=20)
    for x in range(600, 710, 10):
        canvas, dx, dy = pixel_offset(driver, x + 0.5, 300.5)
        sweep.move_to_element_with_offset(canvas, dx, dy).pause(0.02)
    sweep.perform()
    wait_for(lambda: control(driver, "#readout", "dataset").get("values"), "a pixel value")
    shown = driver.execute_script("return {...document.getElementById('readout').dataset};")
    x, y = int(shown["x"]), int(shown["y"])
    assert abs(x - 700) <= 2 and abs(y - 300) <= 2, shown
    values = [float(v) for v in shown["values"].split(",")]
    assert values == pytest.approx(stored_values(server, 1004, x, y), rel=1e-6)
    # Debounced: eleven positions, a request only where the pointer rested 150 ms (its end,
    # and perhaps the sweep's slower first step); a superseded one in flight is aborted.
    reads = requests_made(driver, "/api/v1/images/1004/region?")
    assert 1 <= len(reads) <= 3, reads
    answered = [u for u, s in reads if s == 200]
    assert answered and answered[-1] == reads[-1][0], reads
    assert f"&y={y}:{y + 1}&x={x}:{x + 1}&format=raw" in answered[0]
    text = driver.find_element("id", "readout").text
    assert f"x {x}, y {y}" in text and "Ratio" in text and "Counts" in text
    # Off the image (zoomed out, so there is room around it): nothing shown.
    driver.execute_script("window.idrViewer.viewer.viewport.zoomBy(0.5, null, true);")
    pointer_to_pixel(driver, -100, 300)
    wait_for(
        lambda: not control(driver, "#readout", "dataset").get("values"), "the readout to clear"
    )
    # A plane change under a resting pointer: the values of the new plane (the time-lapse).
    open_viewer(driver, server, "1006")
    pointer_to_pixel(driver, 60.5, 90.5)
    wait_for(lambda: control(driver, "#readout", "dataset").get("values"), "a pixel value")
    x, y = (int(control(driver, "#readout", "dataset")[k]) for k in ("x", "y"))
    press(driver, Keys.ARROW_RIGHT)  # t 0 → 1; the blob moves, the values change
    wait_plane(driver, "1,1")
    want = stored_values(server, 1006, x, y, z=1, t=1)
    assert want != stored_values(server, 1006, x, y, z=1, t=0)
    wait_for(
        lambda: (
            [float(v) for v in control(driver, "#readout", "dataset")["values"].split(",")] == want
        ),
        "the new plane's values",
    )
    assert console_problems(driver) == []


def test_scale_bar_follows_the_zoom(server: Server, driver: Any) -> None:
    open_viewer(driver, server, "1001")  # 0.325 µm pixels

    def check() -> str:
        label = driver.find_element("css selector", "#scalebar .label").text
        width = driver.execute_script(
            "return document.querySelector('#scalebar .bar').getBoundingClientRect().width;"
        )
        zoom = driver.execute_script(
            "const v = window.idrViewer.viewer;"
            "return v.world.getItemAt(0).viewportToImageZoom(v.viewport.getZoom(true));"
        )
        value, unit = label.split()
        microns = float(value) * {"nm": 1e-3, "µm": 1.0, "mm": 1e3}[unit]
        assert float(value) / 10 ** np.floor(np.log10(float(value))) in (1, 2, 5), label
        assert width == pytest.approx(microns / (0.325 / zoom), abs=1.5), (label, width, zoom)
        assert 48 - 1.5 <= width <= 120 + 1.5, (label, width)
        return label

    wide = check()
    driver.execute_script("window.idrViewer.viewer.viewport.zoomBy(8, null, true);")
    wait_for(
        lambda: driver.find_element("css selector", "#scalebar .label").text != wide,
        "the scale bar to change",
    )
    check()
    assert console_problems(driver) == []


def test_image_panel_metadata_links_and_python(server: Server, driver: Any, tmp_path: Any) -> None:
    open_viewer(driver, server, "1006")
    meta = {
        key: driver.find_element("id", f"meta-{key}").text
        for key in ("name", "dimensions", "dtype", "pixel-size", "channels", "levels")
    }
    assert meta == {
        "name": "demo-timelapse",
        "dimensions": "256 × 192 px · Z 3 · C 2 · T 3",
        "dtype": "uint16",
        "pixel-size": "0.5 µm × 0.5 µm × 2 µm (z)",
        "channels": "Moving, Inverse",
        "levels": "2 (tiles 256 × 192)",
    }
    wait_for(
        lambda: driver.find_element("id", "meta-format").text == "OME-NGFF 0.4, Zarr v2",
        "the source format",
    )
    # Every link answers; the IIIF link of this view names its settings.
    links = {
        a.get_attribute("id"): a.get_attribute("href")
        for a in driver.find_elements("css selector", "#links a")
    }
    assert set(links) == {
        "link-iiif-view",
        "link-iiif",
        "link-manifest",
        "link-dzi",
        "link-zarr",
        "link-api",
        "link-imgdata",
        "link-plane",
    }
    for name, href in links.items():
        assert href.startswith(server.base + "/"), (name, href)
        with urllib.request.urlopen(href, timeout=30) as resp:
            assert resp.status == 200, (name, href)
            if name == "link-iiif-view":
                assert ";z=1;t=0;" in unquote(json.load(resp)["id"])
    # The snippet runs as shown and reads the plane on screen.
    change(driver, "#t", 2, "input")
    wait_plane(driver, "1,2")
    snippet = driver.find_element("id", "snippet").get_attribute("textContent")
    assert f'url = "{server.base}/zarr/1006.zarr"' in snippet
    assert "plane = image[2, :, 1]" in snippet
    script = tmp_path / "snippet.py"
    script.write_text(snippet)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "['t', 'c', 'z', 'y', 'x'] (3, 2, 3, 192, 256) uint16 (2, 192, 256)" in done.stdout
    # Copy: to the clipboard where the browser allows it, else the text is selected.
    driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": server.base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    driver.find_element("id", "copy-snippet").click()
    how = wait_for(lambda: driver.find_element("id", "copy-status").text, "the copy to finish")
    if how == "copied":
        pasted = driver.execute_async_script(
            "navigator.clipboard.readText().then(arguments[0], e => arguments[0](String(e)));"
        )
        assert pasted == snippet
    else:
        assert (
            how.startswith("selected")
            and driver.execute_script("return String(getSelection());") == snippet
        )
    assert console_problems(driver) == []


# ---- layout: nothing covers the image ----------------------------------------------------------


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["1400x900", "390x844"])
def test_nothing_covers_the_image(server: Server, driver: Any, size: tuple[int, int]) -> None:
    viewport(driver, *size)
    open_viewer(driver, server, "1005")
    rects = driver.execute_script(
        "const r = s => document.querySelector(s).getBoundingClientRect().toJSON();"
        "return Object.fromEntries(['#osd', 'header', '#infobar', '#toolbar', '#navigator-box',"
        " '#controls', '#plane', '#channels'].map(s => [s, r(s)]));"
    )
    osd = rects.pop("#osd")
    width, height = size
    if size == PHONE:
        assert osd["width"] == width and osd["height"] >= 350, osd
    else:
        assert osd["width"] >= 0.6 * width and osd["height"] >= 0.7 * height, osd
    for name, r in rects.items():
        assert r["width"] > 0 and r["height"] > 0, name
        overlap_x = min(r["right"], osd["right"]) - max(r["left"], osd["left"])
        overlap_y = min(r["bottom"], osd["bottom"]) - max(r["top"], osd["top"])
        assert overlap_x <= 0.5 or overlap_y <= 0.5, (name, r, osd)
    # Every point of the picture is the picture: nothing of the page's own lies over it.
    covered = driver.execute_script(
        """
        const osd = document.getElementById('osd'), r = osd.getBoundingClientRect(), out = [];
        for (let i = 1; i < 12; i++) for (let j = 1; j < 12; j++) {
          const x = r.left + r.width * i / 12, y = r.top + r.height * j / 12;
          const e = document.elementFromPoint(x, y);
          if (!e || !osd.contains(e) || e.closest('.openseadragon-container') === null)
            out.push([x, y, e && (e.id || e.className || e.tagName)]);
        }
        return out;
        """
    )
    assert covered == [], covered[:3]
    # The overview is there and the whole image is drawn, as the server renders it.
    box = rects["#navigator-box"]
    assert box["width"] >= 150 and box["height"] >= 100, box
    check_drawn(driver, expected_composite(server, 1005, 0, 0, ""))
    assert console_problems(driver) == []


# ---- histograms -----------------------------------------------------------------------------


def histogram_ink(driver: Any, channel: int) -> float:
    """The share of a channel's histogram canvas that is painted (0 when hidden)."""
    return float(
        driver.execute_script(
            'const c = document.querySelector(`.channel[data-channel="${arguments[0]}"] '
            ".channel-histogram`); if (c.hidden) return 0;"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
            "for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n / (d.length / 4);",
            channel,
        )
    )


def test_histograms_under_the_sliders(server: Server, driver: Any) -> None:
    open_viewer(driver, server, "1002")
    for c in (1, 2):
        wait_for(lambda c=c: histogram_ink(driver, c) > 0.05, f"channel {c}'s histogram")
    asked = requests_made(driver, "/webgateway/histogram_json/1002/")
    assert {u.split("1002/")[1] for u, _ in asked} >= {
        "channel/0/?theZ=4&theT=0&bins=1024",
        "channel/1/?theZ=4&theT=0&bins=1024",
    }
    assert {s for _, s in asked} == {200}
    forget_requests(driver)
    change(driver, "#z", 7, "input")
    wait_plane(driver, "7,0")
    wait_for(
        lambda: len(requests_made(driver, "?theZ=7&theT=0")) == 2, "the new plane's histograms"
    )
    assert console_problems(driver) == []


def test_sliders_work_without_histograms(server: Server, driver: Any) -> None:
    """A server without histogram_json (its 404 stood in for by the page's own fetch): the
    sliders still set the window, and the viewer asked once."""
    fake_404 = driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": """
            window.histogramAsks = 0;
            const realFetch = window.fetch;
            window.fetch = function (url, init) {
              if (String(url).includes('/histogram_json/')) {
                window.histogramAsks += 1;
                return Promise.resolve(new Response('{"error": "not_found"}', {status: 404}));
              }
              return realFetch.call(this, url, init);
            };
            """
        },
    )
    try:
        q = open_viewer(driver, server, "1002")
        wait_for(lambda: body_data(driver, "histogram") == "unavailable", "the viewer to give up")
        assert histogram_ink(driver, 1) == 0 and histogram_ink(driver, 2) == 0
        change(driver, '.channel[data-channel="2"] .channel-end-slider', 700, "input")
        q = wait_loaded(driver, q)
        assert "2|80:700$FFFF00" in unquote(q)
        check_drawn(driver, expected_composite(server, 1002, 4, 0, q))
        change(driver, "#z", 3, "input")
        wait_plane(driver, "3,0")
        time.sleep(0.5)
        assert driver.execute_script("return window.histogramAsks;") == 1
    finally:
        driver.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": fake_404["identifier"]}
        )
    assert console_problems(driver) == []


# ---- the index and the 404 page -----------------------------------------------------------------


def test_index_cards_fill_in_as_they_scroll_into_view(server: Server, driver: Any) -> None:
    viewport(driver, 390, 200)  # two columns of cards, about one row in view
    driver.get(server.base + "/viewer/")
    cards = "[...document.querySelectorAll('#images li[data-image-id]')]"
    wait_for(
        lambda: driver.execute_script(f"return {cards}[0].dataset.state === 'loaded';"), "a card"
    )
    time.sleep(0.5)
    # Cards well below the window (past the observer's 200 px margin) have asked for nothing.
    far = driver.execute_script(
        f"return {cards}.filter(c => c.getBoundingClientRect().top > innerHeight + 250)"
        ".map(c => [c.dataset.imageId, c.dataset.state || null]);"
    )
    assert far and all(state is None for _, state in far), far
    asked = {u.split("/imgData/")[1] for u, _ in requests_made(driver, "/webgateway/imgData/")}
    assert asked.isdisjoint({f"{i}/" for i, _ in far}), asked
    driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")
    every = f"{cards}.every(c => c.dataset.state === 'loaded')"
    wait_for(lambda: driver.execute_script(f"return {every};"), "every card")
    card = driver.find_element("css selector", '#images li[data-image-id="1002"]')
    assert card.find_element("css selector", ".card-name").text == "demo-zstack"
    assert card.find_element("css selector", ".card-size").text == "512 × 512 · Z 9 · 2 channels"
    single = driver.find_element("css selector", '#images li[data-image-id="1003"] .card-size')
    assert single.text == "600 × 400 · 1 channel"
    assert console_problems(driver) == []


def test_unknown_image_is_a_page(server: Server, driver: Any) -> None:
    driver.get(f"{server.base}/viewer/999999")
    assert driver.title == "Not found · idrserve"
    assert "image 999999 not found" in driver.find_element("id", "detail").text
    driver.find_element("link text", "Browse the images served").click()
    wait_for(lambda: driver.current_url == f"{server.base}/viewer/", "the index")
    # The only complaint is the browser's note of the 404 itself.
    problems = console_problems(driver)
    assert all("/viewer/999999" in p["message"] and "404" in p["message"] for p in problems), (
        problems
    )
