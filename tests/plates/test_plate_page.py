"""The viewer's plate page in a real headless Chromium against a real `idrserve serve`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import free_port, wait_ready
from tests.integration.test_viewer_browser import console_problems, headless_chromium, wait_for
from tests.plates.conftest import P05, P96, PlateData
from tests.plates.test_plate_source import sid

# Where the page's screenshot goes when set (docs/screenshots/plate-page.png is made so).
SHOT_DIR = os.environ.get("IDRSERVE_TEST_SCREENSHOT_DIR")


@pytest.fixture(scope="module")
def served(plate_data: PlateData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("plate_page") / "server.log"
    env = {
        **os.environ,
        "IDRSERVE_SOURCE__ZARR_ROOT": str(plate_data.root),
        "IDRSERVE_SOURCE__CATALOG": str(plate_data.catalog),
        "IDRSERVE_SOURCE__PLATES": str(plate_data.plates),
        "IDRSERVE_SOURCE__PLATE_FIELDS": str(plate_data.plate_fields),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "idrserve", "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, proc)
            yield base
        finally:
            proc.terminate()
            proc.wait(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as driver:
        yield driver


def state(driver: Any) -> dict[str, Any]:
    result: dict[str, Any] = driver.execute_script(
        """
        const q = (s) => Array.from(document.querySelectorAll(s));
        return {
          state: document.body.dataset.state || "",
          rows: q('#grid tr').length,
          cols: q('#grid tr:first-child th').length,
          rowLabels: q('#grid tr th:first-child').slice(1).map(t => t.textContent),
          colLabels: q('#grid tr:first-child th').slice(1).map(t => t.textContent),
          links: q('#grid td a').map(a => a.getAttribute('href')),
          images: q('#grid td a img').filter(i => i.complete && i.naturalWidth > 0).length,
          broken: q('#grid td.broken').length,
          empty: q('#grid td.empty').length,
          field: document.getElementById('field').value,
          fields: document.getElementById('field').options.length,
          acquisitions: document.getElementById('acquisition-label').hidden ? 0 :
            document.getElementById('acquisition').options.length,
          name: document.getElementById('plate-name').textContent,
        };
        """
    )
    return result


def ready(driver: Any, field: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        s = state(driver)
        return s if s["state"] == "ready" and s["field"] == field else None

    found: dict[str, Any] = wait_for(done, f"the plate page to show field {field}")
    return found


def test_plate_page_shows_the_well_grid(served: str, browser: Any, tmp_path: Path) -> None:
    console_problems(browser)
    browser.get(f"{served}/viewer/plate/{P96}")
    s = ready(browser, "0")
    assert s["name"] == "plate-96" and s["fields"] == 2
    assert s["rowLabels"] == list("ABCDEFGH") and s["colLabels"] == [str(i) for i in range(1, 13)]
    # field 0: rows A-B, E5 (broken: a placeholder) and H12; C3 and D4 are empty like the rest
    assert len(s["links"]) == 26 and s["images"] == 25 and s["broken"] == 1
    assert s["empty"] == 96 - 26
    assert s["links"][0] == f"/viewer/{sid(P96, 0, 0, 0)}"
    if SHOT_DIR:
        browser.save_screenshot(str(Path(SHOT_DIR) / "plate-page.png"))
    browser.find_element("id", "next-field").click()
    s = ready(browser, "1")
    assert len(s["links"]) == 25 and s["images"] == 25 and s["broken"] == 0  # no H12 field 2
    assert s["links"][0] == f"/viewer/{sid(P96, 0, 0, 1)}"
    browser.get(served + s["links"][0])  # a well's link opens the image viewer on that field
    wait_for(lambda: browser.execute_script("return document.body.className") == "viewer", "viewer")
    assert not [e for e in console_problems(browser) if "favicon" not in e["message"]]


def test_plate_page_acquisitions_and_unknown_plate(served: str, browser: Any) -> None:
    browser.get(f"{served}/viewer/plate/{P05}")
    s = ready(browser, "0")
    assert s["acquisitions"] == 3 and s["images"] == 6  # all, day 1, day 2
    browser.get(f"{served}/viewer/plate/424242")
    assert "424242" in browser.page_source and "not found" in browser.page_source
