"""Plate thumbnails from the lowest levels only, the montage, and `cache warm --plate`."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from idrserve.app import create_app
from idrserve.plate_warm import urls_for_plates
from idrserve.settings import load_settings
from idrserve.warm import warm
from tests.plates.conftest import P96, P384, PlateData
from tests.plates.test_plate_source import sid

_OPENED: list[str] | None = None
_CHUNK = re.compile(r"/(s\d)/\d+/\d+/\d+$")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _OPENED is not None and isinstance(args[0], str | bytes):
        _OPENED.append(args[0] if isinstance(args[0], str) else args[0].decode())


sys.addaudithook(_audit)  # Python's own audit events: every os.open and open() call


@pytest.fixture
def opened() -> Iterator[list[str]]:
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


async def test_384_well_thumbnails_read_only_the_lowest_level(
    plate_data: PlateData, aiohttp_client: Callable[..., Any], opened: list[str]
) -> None:
    """In this copy of the 384-well plate every chunk of levels 0 and 1 is garbage: a batch at
    the default size still answers every well, and the files opened are one level-2 chunk a
    field; a size that needs level 1 fails every well (so the check can fail)."""
    settings = load_settings({"source": {"zarr_root": str(plate_data.corrupt_root)}})
    client: TestClient = await aiohttp_client(create_app(settings))
    api = await (await client.get(f"/api/v1/plates/{P384}")).json()
    ids = [w["fields"][0]["image_id"] for w in api["wells"]]
    assert len(ids) == 40
    answers: dict[str, Any] = {}
    for batch in (ids[:20], ids[20:]):
        query = "&".join(f"id={i}" for i in batch)
        answers |= await (await client.get(f"/webgateway/get_thumbnails/?{query}")).json()
    assert len(answers) == 40 and all(
        v and v.startswith("data:image/jpeg") for v in answers.values()
    )
    chunks = [
        m.group(1) for p in opened if str(plate_data.corrupt_root) in p if (m := _CHUNK.search(p))
    ]
    assert chunks.count("s2") == 40 and set(chunks) == {"s2"}, sorted(set(chunks))
    opened.clear()
    grid = await (await client.get(f"/webgateway/plate/{P384}/")).json()
    assert len(grid["grid"]) == 16 and len(grid["grid"][0]) == 24
    assert not [p for p in opened if _CHUNK.search(p)]  # the grid reads no pixels at all
    query = "&".join(f"id={i}" for i in ids[:5])
    bigger = await (await client.get(f"/webgateway/get_thumbnails/200/?{query}")).json()
    assert list(bigger.values()) == [None] * 5


def _jpeg(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(int)


async def test_montage_shows_every_well(plate_client: Callable[..., Any]) -> None:
    client = await plate_client()
    resp = await client.get(f"/webgateway/plate/{P96}/montage.jpg?size=32")
    assert resp.status == 200 and resp.content_type == "image/jpeg"
    img = _jpeg(await resp.read())
    step, label, gap = 34, 14, 2
    assert img.shape == (label + 8 * step + gap, label + 12 * step + gap, 3)

    def cell(r: int, c: int) -> np.ndarray:
        y, x = label + gap + r * step, label + gap + c * step
        return img[y + 4 : y + 28, x + 4 : x + 28]

    thumb = _jpeg(
        await (await client.get(f"/webgateway/render_thumbnail/{sid(P96, 1, 3, 0)}/32/")).read()
    )
    assert np.abs(cell(1, 3) - thumb[4:28, 4:28]).mean() < 12  # B4's own thumbnail
    assert cell(2, 2).mean() < 50  # C3: a well group without images
    assert cell(3, 3).mean() < 50  # D4: listed, no group
    assert 150 < cell(4, 4).mean() < 220  # E5 field 0 is broken: the light placeholder
    etag = resp.headers.get("ETag")
    assert etag is None  # a montage with a failed well is never kept
    good = await client.get(f"/webgateway/plate/{P96}/montage.jpg?field=1&size=16")
    assert good.status == 200 and good.headers["ETag"]
    again = await client.get(
        f"/webgateway/plate/{P96}/montage.jpg?field=1&size=16",
        headers={"If-None-Match": good.headers["ETag"]},
    )
    assert again.status == 304


@pytest.mark.parametrize(
    ("query", "status", "param"),
    [
        ("size=1000", 400, "size"),
        ("size=4", 400, "size"),
        ("field=x", 400, "field"),
        ("acquisition=3", 404, "acquisition"),
    ],
)
async def test_bad_montages(
    plate_client: Callable[..., Any], query: str, status: int, param: str
) -> None:
    client = await plate_client()
    resp = await client.get(f"/webgateway/plate/{P96}/montage.jpg?{query}")
    assert resp.status == status and (await resp.json())["param"] == param


async def test_montage_too_large_and_unknown(plate_client: Callable[..., Any]) -> None:
    client = await plate_client(limits__max_region_pixels=1_000_000)
    resp = await client.get(f"/webgateway/plate/{P384}/montage.jpg?size=256")
    assert resp.status == 413 and (await resp.json())["error"] == "too_large"
    resp = await client.get("/webgateway/plate/424242/montage.jpg")
    assert resp.status == 404


async def test_warm_plate_fills_the_cache(plate_client: Callable[..., Any]) -> None:
    client = await plate_client()
    base = str(client.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        urls = await urls_for_plates(session, base, [P96, 424242])
        report = await warm(base, urls, progress=False, session=session)
    fields = 24 * 2 + 2 + 1  # A-B, E5 and H12
    assert len(urls) == 2 + 2 * fields + 1
    # E5's broken field fails its two thumbnails; the grids, the montage and the rest succeed
    assert report.failed == 2 and report.statuses[200] == len(urls) - 2
    hit = await client.get(f"/webgateway/render_thumbnail/{sid(P96, 0, 5, 1)}/")
    assert hit.headers["X-Cache"] == "memory"


def test_warm_cli_names_an_unreachable_server() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "idrserve",
            "cache",
            "warm",
            "--plate",
            "1",
            "--server",
            "http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "cannot reach" in done.stderr
