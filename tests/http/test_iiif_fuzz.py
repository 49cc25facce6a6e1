"""Hypothesis against a real socket: IIIF and DeepZoom paths never give a 5xx, every 4xx has a
JSON body, and path traversal in identifiers (raw and percent-encoded) is a 4xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http.demo_live import raw_get, serve_in_thread
from tests.http.iiif_fixtures import ODD, SQUARES


@pytest.fixture(scope="module")
def live(iiif_root: Path) -> Iterator[tuple[str, int]]:
    """The app on a real socket in a background thread."""
    with serve_in_thread(iiif_root) as addr:
        yield addr


def check(addr: tuple[str, int], path: str) -> int:
    status, ctype, body = raw_get(addr, path)
    assert status < 500 or status == 501, (path, status, body[:200])
    if status >= 400:
        assert ctype.startswith("application/json"), (path, ctype)
        assert json.loads(body)["detail"], path
    return status


def segment(*valid: str) -> st.SearchStrategy[str]:
    junk = st.text(
        alphabet=st.sampled_from(list("0123456789,.:!^%;=|$-+_~abcfgmpqtxz[]@ \\é")), max_size=24
    )
    return st.sampled_from(valid) | junk


identifiers = segment(
    str(ODD), str(SQUARES), f"{ODD};z=0", f"{ODD};c=1%7C0:100$FF0000", "..", "%2e%2e", "0"
)
regions = segment("full", "square", "0,0,256,256", "pct:10,10,50,50", "4000,2900,500,500")
sizes = segment("max", "^max", "64,", ",64", "pct:5", "!64,64", "^300,300", "full", "32,32")
rotations = segment("0", "90", "!180", "270", "45", "360")
tails = segment("default.jpg", "color.png", "gray.webp", "bitonal.tif", "default.gif")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(["3", "2"]), identifiers, regions, sizes, rotations, tails, st.integers(0, 3)
)
def test_iiif_paths_never_5xx(
    live: tuple[str, int],
    version: str,
    ident: str,
    region: str,
    size: str,
    rotation: str,
    tail: str,
    shape: int,
) -> None:
    parts = [ident, region, size, rotation, tail]
    # Also the base URI, info.json, and truncated paths.
    parts = [parts, [ident], [ident, "info.json"], parts[:3]][shape]
    path = f"/iiif/{version}/" + "/".join(quote(p, safe="%;=,:!^$") for p in parts)
    check(live, path)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    segment(str(ODD), str(SQUARES), "99999", "..", "%2e%2e"),
    segment("13", "12", "0", "9", "99"),
    segment("0_0", "16_11", "1_1", "99_0", "0_-1"),
    segment("jpeg", "png", "webp", "tif", "bmp"),
    st.dictionaries(
        st.sampled_from(["c", "m", "z", "t", "q", "p", "format", "maps"]),
        segment("1|0:100$FF0000", "g", "0", "0.5", "intmax", "png"),
        max_size=3,
    ),
)
def test_deepzoom_paths_never_5xx(
    live: tuple[str, int],
    ident: str,
    level: str,
    tile: str,
    ext: str,
    query: dict[str, str],
) -> None:
    qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    q = f"?{qs}" if qs else ""
    safe = "%"
    check(live, f"/deepzoom/{quote(ident, safe=safe)}.dzi{q}")
    check(
        live,
        f"/deepzoom/{quote(ident, safe=safe)}_files/{quote(level, safe=safe)}/"
        f"{quote(tile, safe=safe)}.{quote(ext, safe=safe)}{q}",
    )


@pytest.mark.parametrize(
    "path",
    [
        "/iiif/3/../../etc/passwd",
        "/iiif/3/../../../etc/passwd/info.json",
        "/iiif/3/..%2F..%2Fetc%2Fpasswd/info.json",
        "/iiif/3/%2e%2e%2f%2e%2e%2fetc%2fpasswd/full/max/0/default.jpg",
        "/iiif/3/8001%2F..%2F..%2Fetc/info.json",
        "/iiif/3/..%5C..%5Cwindows/info.json",
        "/iiif/2/%252e%252e%252f/info.json",
        "/deepzoom/../../etc/passwd.dzi",
        "/deepzoom/..%2F..%2Fetc%2Fpasswd.dzi",
        "/deepzoom/8001_files/..%2F..%2F/0_0.jpeg",
    ],
)
def test_path_traversal_is_4xx(live: tuple[str, int], path: str) -> None:
    status = check(live, path)
    assert 400 <= status < 500, path


def test_lut_names_with_paths_are_not_files(live: tuple[str, int]) -> None:
    """A LUT name is a file name, never a path: `../x.lut` is an invalid colour (ignored, as
    webgateway ignores invalid colours), so the channel renders with its saved colour."""
    base = f"/iiif/3/{ODD};c=1%7C0:4000"
    status, _, traversal = raw_get(live, f"{base}$..%2F..%2Fx.lut/0,0,64,64/max/0/default.png")
    plain_status, _, plain = raw_get(live, f"{base}/0,0,64,64/max/0/default.png")
    assert status == plain_status == 200
    assert traversal == plain
