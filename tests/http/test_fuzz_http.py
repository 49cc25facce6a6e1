"""Hypothesis throws arbitrary parameters at a real running server: never a 5xx, always JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http.conftest import P, S, Z
from tests.http.demo_live import raw_get, serve_in_thread


@pytest.fixture(scope="module")
def live(zarr_root: Path) -> Iterator[tuple[str, int]]:
    """The app on a real socket in a background thread."""
    with serve_in_thread(zarr_root) as addr:
        yield addr


def check(addr: tuple[str, int], path: str) -> None:
    status, ctype, body = raw_get(addr, path)
    assert status < 500, (path, status, body[:200])
    if status >= 400:
        assert ctype.startswith("application/json"), (path, ctype)
        assert json.loads(body)["detail"]


text = st.text(
    alphabet=st.sampled_from(list("0123456789-+.,:|$eE_abcfFgGhinv[]{}\"' %/\\")),
    max_size=40,
)
params = st.dictionaries(
    st.sampled_from(
        ["tile", "region", "c", "m", "p", "q", "maps", "format", "flip", "z", "t", "callback", "id"]
    ),
    text | st.text(max_size=20),
    max_size=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=st.sampled_from([P, S, Z, 999]), query=params)
def test_render_image_region_fuzz(live: tuple[str, int], image: int, query: dict[str, str]) -> None:
    qs = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
    check(live, f"/webgateway/render_image_region/{image}/0/0/?{qs}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from(
        [
            "/webgateway/render_image/{i}/{a}/{b}/",
            "/webgateway/render_thumbnail/{i}/{a}/",
            "/webgateway/render_thumbnail/{i}/{a}/{b}/",
            "/webgateway/render_birds_eye_view/{i}/{a}/",
            "/webgateway/get_thumbnails/{a}/",
            "/webgateway/imgData/{i}/{s}/",
            "/webclient/render_thumbnail/size/{a}/{i}/",
        ]
    ),
    image=st.sampled_from([P, S, Z, 999]),
    a=st.integers(0, 10**12),
    b=st.integers(0, 10**12),
    s=st.text(alphabet="abcdefghijklmnopqrstuvwxyz.", min_size=1, max_size=30),
    query=params,
)
def test_other_routes_fuzz(
    live: tuple[str, int], route: str, image: int, a: int, b: int, s: str, query: dict[str, str]
) -> None:
    qs = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
    check(live, route.format(i=image, a=a, b=b, s=s) + "?" + qs)


@pytest.mark.parametrize(
    "path",
    [
        "/webgateway/imgData/..%2F..%2Fetc%2Fpasswd/",
        "/webgateway/imgData/7002/..%2F..%2F/",
        "/../../etc/passwd",
        "/webgateway/render_image_region/7002/0/0/?tile=0,0,0&c=1|0:255$..%2F..%2Fetc%2Fpasswd.lut",
        "/webgateway/render_image_region/7002/0/0/?tile=0,0,0&c=1|0:255$%2Fetc%2Fpasswd.lut",
        "/webgateway/render_thumbnail/" + "9" * 30 + "/",
        "/webgateway/render_image_region/7002/0/0/?tile=0,0,0&c=" + "1," * 5000,
    ],
)
def test_hostile_paths(live: tuple[str, int], path: str) -> None:
    status, _ctype, body = raw_get(live, path)
    assert status < 500
    assert b"root:" not in body
