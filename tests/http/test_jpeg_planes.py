"""One-channel JPEG tiles encoded from YCbCr planes (render/ycc.py) through the server.

A viewer cannot tell which path made a tile: the same request answered with the planes path
and with it turned off gives the same bytes, for webgateway and IIIF tiles of one-channel
images, one channel of a three-channel image (colour and greyscale model), and the shapes
and requests that must keep the RGB path (odd edges, several channels, PNG, rotation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import idrserve.service as service
from idrserve.render import YccPlanes
from tests.http.conftest import P, S, Z

RI = "/webgateway/render_image_region"
# (URL, whether the planes path answers it)
CASES = [
    (f"{RI}/{S}/0/0/?tile=0,0,0,256,256", True),  # uint8 greyscale model
    (f"{RI}/{S}/0/0/?region=0,0,600,400", True),  # 600 wide: grey takes any even width
    (f"{RI}/{S}/0/0/?region=1,1,599,399", False),  # odd
    (f"{RI}/{Z}/2/0/?tile=0,1,1,256,256", True),  # uint16 greyscale, another z
    (f"{RI}/{P}/0/0/?tile=0,1,1,256,256&c=2|200:2500$00FF00&m=c", True),  # one coloured channel
    (f"{RI}/{P}/0/0/?tile=0,1,1,256,256&c=-1,2|200:2500$FF00FF,-3&m=c", True),
    (f"{RI}/{P}/0/0/?tile=0,1,1,256,256&c=1|110:1800$FFFFFF&m=c", True),  # white: grey chroma
    (f"{RI}/{P}/0/0/?tile=0,1,1,256,256&c=1|110:1800$0000FF,2&m=g", True),  # greyscale model
    (f"{RI}/{P}/0/0/?region=0,0,1000,1000&c=2|200:2500$00FF00&m=c", False),  # 1000: not × 16
    (f"{RI}/{P}/0/0/?region=0,0,1000,1000&c=2|200:2500$FFFFFF&m=c", True),  # grey at 1000
    (f"{RI}/{P}/0/0/?tile=0,1,1,256,256", False),  # the saved two-channel render
    (f"{RI}/{P}/0/0/?tile=0,1,1,256,256&c=2|200:2500$00FF00&m=c&format=png", False),
    (f"/iiif/3/{S}/0,0,256,256/256,/0/default.jpg", True),
    (f"/iiif/3/{S}/0,0,256,256/256,/90/default.jpg", False),  # rotated after rendering
    (f"/iiif/3/{S}/0,0,256,256/128,/0/default.jpg", True),  # a pyramid-less downsample
    (f"/iiif/3/{S}/0,0,256,256/100,/0/default.jpg", False),  # resized after rendering
    (f"/iiif/3/{S}/0,0,256,256/256,/0/gray.jpg", False),  # a tone conversion after it
]


@pytest.mark.parametrize(("url", "planes"), CASES)
async def test_the_planes_path_gives_the_rgb_paths_bytes(
    url: str, planes: bool, make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No response cache: both requests render.
    client = await make_client(cache__memory_max_bytes=0)
    taken: list[YccPlanes | None] = []
    real = service._as_jpeg_planes

    def spy(*args: Any) -> YccPlanes | None:
        taken.append(real(*args))
        return taken[-1]

    monkeypatch.setattr(service, "_as_jpeg_planes", spy)
    resp = await client.get(url)
    assert resp.status == 200, (url, await resp.text())
    with_planes = await resp.read()
    assert any(p is not None for p in taken) is planes, url
    rgb_path: list[object] = []
    monkeypatch.setattr(service, "_as_jpeg_planes", lambda *args: rgb_path.append(args))
    resp = await client.get(url)
    assert resp.status == 200
    assert rgb_path, "rendered again, not answered from a cache"
    assert await resp.read() == with_planes, url
