"""OMERO.iviewer's boot endpoints (docs/iviewer.md) over HTTP, on real OME-Zarr.

Expected documents are written out in full. Each names the OMERO.web (or OMERO.iviewer, or
OMERO server) function whose output shape it mirrors; the values are what that function gives
the public user for the same image, except where docs/iviewer.md lists a difference.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from aiohttp.test_utils import TestClient
from PIL import Image

from idrserve.app import create_app
from idrserve.http.histograms import histogram_level
from idrserve.http.iviewer_data import display_micrometres, image_rdefs, pixel_size_units
from idrserve.http.keys import ADMISSION
from idrserve.model import ChannelMeta, ColorModel, ImageMeta, LevelMeta
from idrserve.render.histogram import bin_counts
from idrserve.render.lut import LutTable
from idrserve.settings import load_settings
from tests.http.conftest import write_ngff04

A, B = 8101, 8102
A_SHAPES = [(2, 2, 1200 // 2**i, 1400 // 2**i) for i in range(3)]
FAMILIES = ["linear", "polynomial", "exponential", "logarithmic"]


def _axes(units: dict[str, str]) -> list[dict[str, Any]]:
    kinds = {"c": "channel", "t": "time"}
    return [
        {"name": a, "type": kinds.get(a, "space"), **({"unit": units[a]} if a in units else {})}
        for a in units.get("_order", "")
    ]


def _set_units(path: Path, order: str, units: dict[str, str], scale0: dict[str, float]) -> None:
    """Rewrite the multiscale's axes and scales: level i is 2**i coarser in y and x."""
    root = zarr.open_group(str(path), mode="r+")
    ms = root.attrs["multiscales"]
    ms[0]["axes"] = _axes({**units, "_order": order})
    for i, ds in enumerate(ms[0]["datasets"]):
        factor = 2.0**i
        scale = [scale0.get(a, 1.0) * (factor if a in "yx" else 1.0) for a in order]
        ds["coordinateTransformations"] = [{"type": "scale", "scale": scale}]
    root.attrs["multiscales"] = ms


@pytest.fixture(scope="module")
def iviewer_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("iviewer_root")
    rng = np.random.default_rng(16)
    # A: 1400×1200 uint16, 2 channels, 2 z-planes, 3 levels; µm in x/y, nm in z.
    data = [rng.integers(0, 4096, size=s, dtype=np.uint16) for s in A_SHAPES]
    write_ngff04(
        root / f"{A}.zarr",
        A_SHAPES,
        "czyx",
        "uint16",
        (1, 1, 256, 256),
        {
            "name": "A",
            "channels": [
                {
                    "label": "DNA",
                    "color": "0000FF",
                    "active": True,
                    "window": {"min": 0, "max": 4095, "start": 100, "end": 2000},
                },
                {
                    "label": "Actin",
                    "color": "FF00FF",
                    "active": False,
                    "family": "polynomial",
                    "coefficient": 0.5,
                    "inverted": True,
                    "window": {"min": 0, "max": 4095, "start": 50, "end": 3000},
                },
            ],
            "rdefs": {"model": "color", "defaultZ": 1, "defaultT": 0},
        },
        list(data),
    )
    _set_units(
        root / f"{A}.zarr",
        "czyx",
        {"z": "nanometer", "y": "micrometer", "x": "micrometer"},
        {"z": 500.0, "y": 0.325, "x": 0.325},
    )
    # B: 300×200 float32, one level, no omero block, sizes in millimetres, a few NaNs.
    b = rng.normal(1.0, 0.8, size=(200, 300)).astype(np.float32)
    b[0, :7] = np.nan
    write_ngff04(root / f"{B}.zarr", [(200, 300)], "yx", "float32", (200, 300), None, [b])
    _set_units(
        root / f"{B}.zarr", "yx", {"y": "millimeter", "x": "millimeter"}, {"y": 0.002, "x": 0.002}
    )
    return root


@pytest.fixture
def make_iviewer_client(
    iviewer_root: Path, aiohttp_client: Callable[..., Any]
) -> Callable[..., Any]:
    async def factory(**groups: dict[str, Any]) -> TestClient:
        merged: dict[str, Any] = {"source": {"zarr_root": str(iviewer_root)}}
        for group, values in groups.items():
            merged.setdefault(group, {}).update(values)
        client: TestClient = await aiohttp_client(create_app(load_settings(merged)))
        return client

    return factory


@pytest.fixture
async def client(make_iviewer_client: Callable[..., Any]) -> TestClient:
    client: TestClient = await make_iviewer_client()
    return client


async def get_json(client: TestClient, url: str, status: int = 200) -> Any:
    resp = await client.get(url)
    body = await resp.read()
    assert resp.status == status, (url, body[:300])
    assert resp.content_type in ("application/json", "application/javascript"), url
    return json.loads(body) if resp.content_type == "application/json" else body.decode()


# --- /iviewer/image_data/<id>/ ------------------------------------------------------------------

# omero_iviewer.views.image_data for A: webgateway.marshal.imageMarshal(image) (5.28+ keys, 5.31's
# `resolutions`), called without a request (interpolate true, init_zoom 0), then roi_count,
# unit_*/symbol_*/unit_id_* per physical size (format_pixel_size_with_units: µm through
# common_filters.lengthformat/lengthunit, other units as stored), delta_t_unit_symbol,
# import_date and families. OME-Zarr has no import date (null) and no ROIs (0).
A_IMAGE_DATA: dict[str, Any] = {
    "id": A,
    "meta": {
        "imageName": "A",
        "imageDescription": "",
        "imageAuthor": "",
        "imageArchived": False,
        "projectName": "Multiple",
        "projectId": None,
        "projectDescription": "",
        "datasetName": "Multiple",
        "datasetId": None,
        "datasetDescription": "",
        "wellSampleId": "",
        "wellId": "",
        "imageTimestamp": 0.0,
        "imageId": A,
        "pixelsType": "uint16",
    },
    "perms": {"canAnnotate": False, "canEdit": False, "canDelete": False, "canLink": False},
    "tiles": True,
    "tile_size": {"width": 256, "height": 256},
    "levels": 3,
    "resolutions": {
        "0": {"sizeX": 1400, "sizeY": 1200},
        "1": {"sizeX": 700, "sizeY": 600},
        "2": {"sizeX": 350, "sizeY": 300},
    },
    "zoomLevelScaling": {"0": 1.0, "1": 0.5, "2": 0.25},
    "interpolate": True,
    "size": {"width": 1400, "height": 1200, "z": 2, "t": 1, "c": 2},
    "pixel_size": {
        "x": 0.325,
        "y": 0.325,
        "z": 0.5,
        "unit_x": 0.325,
        "symbol_x": "\u00b5m",
        "unit_id_x": "MICROMETER",
        "unit_y": 0.325,
        "symbol_y": "\u00b5m",
        "unit_id_y": "MICROMETER",
        "unit_z": 500.0,
        "symbol_z": "nm",
        "unit_id_z": "NANOMETER",
    },
    "init_zoom": 0,
    "pixel_range": [0, 65535],
    "channels": [
        {
            "emissionWave": None,
            "label": "DNA",
            "color": "0000FF",
            "inverted": False,
            "reverseIntensity": False,
            "family": "linear",
            "coefficient": 1.0,
            "window": {"min": 0.0, "max": 4095.0, "start": 100.0, "end": 2000.0},
            "active": True,
        },
        {
            "emissionWave": None,
            "label": "Actin",
            "color": "FF00FF",
            "inverted": True,
            "reverseIntensity": True,
            "family": "polynomial",
            "coefficient": 0.5,
            "window": {"min": 0.0, "max": 4095.0, "start": 50.0, "end": 3000.0},
            "active": False,
        },
    ],
    # ImageWrapper.splitChannelDims: grids of 2 (greyscale) and 3 (colour) panels.
    "split_channel": {
        "g": {"width": 2806, "height": 1204, "border": 2, "gridx": 2, "gridy": 1},
        "c": {"width": 2806, "height": 2406, "border": 2, "gridx": 2, "gridy": 2},
    },
    "rdefs": {
        "model": "color",
        "projection": "normal",
        "defaultZ": 1,
        "defaultT": 0,
        "invertAxis": False,
    },
    "roi_count": 0,
    "delta_t_unit_symbol": None,
    "import_date": None,
    "families": FAMILIES,
}


async def test_image_data_matches_iviewer(client: TestClient) -> None:
    doc = await get_json(client, f"/iviewer/image_data/{A}/")
    assert doc == A_IMAGE_DATA
    assert list(doc) == list(A_IMAGE_DATA)  # Django keeps the marshal's insertion order
    assert list(doc["pixel_size"]) == list(A_IMAGE_DATA["pixel_size"])


async def test_image_data_is_imgdata_plus_iviewer_fields(client: TestClient) -> None:
    doc = await get_json(client, f"/iviewer/image_data/{A}/")
    img = await get_json(client, f"/webgateway/imgData/{A}/")
    extra = {"roi_count", "delta_t_unit_symbol", "import_date", "families"}
    assert list(doc) == [*img, *sorted(extra, key=list(doc).index)]
    for key in img:
        if key != "pixel_size":
            assert doc[key] == img[key], key
    assert {k: doc["pixel_size"][k] for k in "xyz"} == img["pixel_size"]


async def test_image_data_ignores_viewer_settings(
    make_iviewer_client: Callable[..., Any],
) -> None:
    """iviewer's view marshals without a request, so web's viewer settings never apply."""
    client = await make_iviewer_client(viewer={"interpolate": False, "init_zoom": -1})
    doc = await get_json(client, f"/iviewer/image_data/{A}/")
    assert (doc["interpolate"], doc["init_zoom"]) == (True, 0)
    img = await get_json(client, f"/webgateway/imgData/{A}/")
    assert (img["interpolate"], img["init_zoom"]) == (False, 2)


async def test_image_data_units_as_stored_and_no_z(client: TestClient) -> None:
    doc = await get_json(client, f"/iviewer/image_data/{B}/")
    # format_pixel_size_with_units: a unit other than µm is shown as stored, with its symbol.
    assert doc["pixel_size"] == {
        "x": 2.0,
        "y": 2.0,
        "z": None,
        "unit_x": 0.002,
        "symbol_x": "mm",
        "unit_id_x": "MILLIMETER",
        "unit_y": 0.002,
        "symbol_y": "mm",
        "unit_id_y": "MILLIMETER",
    }
    assert doc["tiles"] is False and "levels" not in doc
    assert doc["meta"]["pixelsType"] == "float"
    assert doc["roi_count"] == 0 and doc["families"] == FAMILIES


async def test_image_data_errors(client: TestClient) -> None:
    # iviewer answers an unknown image with a 404 JSON object carrying `error`.
    body = await get_json(client, "/iviewer/image_data/999999/", 404)
    assert body["error"] == "not_found" and "request_id" in body
    await get_json(client, "/iviewer/image_data/abc/", 404)  # no route, as on Django
    resp = await client.get(f"/iviewer/image_data/{A}", allow_redirects=False)
    assert resp.status == 301
    assert resp.headers["Location"].endswith(f"/iviewer/image_data/{A}/")


@pytest.mark.parametrize(
    ("um", "shown", "symbol"),
    [
        # webgateway.templatetags.common_filters.lengthformat / lengthunit, branch by branch
        (0.0, 0.0, "\u00b5m"),
        (0.0005, 0.0005 * 1000 * 10, "\u212b"),
        (0.005, 0.005 * 1000, "nm"),
        (0.01, 0.01, "\u00b5m"),
        (999.5, 999.5, "\u00b5m"),
        (1500.0, 1.5, "mm"),
        (250000.0, 250000.0 / 1000 / 100, "cm"),  # web's cm divides by 10⁵
        (5e6, 5e6 / 1000 / 100 / 10, "m"),
        (2e8, 2e8 / 1000 / 100 / 10 / 1000, "km"),
    ],
)
def test_micrometres_shown_as_web_does(um: float, shown: float, symbol: str) -> None:
    assert display_micrometres(um) == (shown, symbol)


def test_pixel_size_units() -> None:
    # omero_iviewer.views.format_pixel_size_with_units: (value, symbol, unit id)
    assert pixel_size_units(0.0065, (0.0065, "MICROMETER")) == (6.5, "nm", "MICROMETER")
    assert pixel_size_units(0.065, (65.0, "NANOMETER")) == (65.0, "nm", "NANOMETER")
    assert pixel_size_units(0.1, (1000.0, "ANGSTROM")) == (1000.0, "\u00c5", "ANGSTROM")
    # a source that does not know the stored unit (OMERO's reader) reports micrometres
    assert pixel_size_units(0.5, None) == (0.5, "\u00b5m", "MICROMETER")


# --- rendering definitions, copy/paste, open-with, paths ---------------------------------------


async def test_get_img_rdef_without_a_copy(client: TestClient) -> None:
    # webgateway.views.get_image_rdef_json with neither "rdef" nor "fromid" in the session
    assert await get_json(client, "/webgateway/getImgRDef/") == {"rdef": None}
    assert await get_json(client, "/webgateway/getImgRDef/?callback=cb") == 'cb({"rdef": null})'
    await get_json(client, "/webgateway/getImgRDef/?callback=a-b", 400)


async def test_image_rdefs_json(client: TestClient) -> None:
    # webgateway.views.get_image_rdefs_json → ImageWrapper.getAllRenderingDefs: one entry per
    # rendering definition; the NGFF omero block is the one saved definition. Its id and
    # owner are not recorded in OME-Zarr (-1 and an unnamed owner).
    expected = {
        "rdefs": [
            {
                "id": -1,
                "owner": {"id": -1, "firstName": "", "lastName": ""},
                "z": 1,
                "t": 0,
                "model": "rgb",
                "c": [
                    {
                        "active": True,
                        "start": 100.0,
                        "end": 2000.0,
                        "color": "0000FF",
                        "inverted": False,
                        "reverseIntensity": False,
                        "family": "linear",
                        "coefficient": 1.0,
                        "rgb": {"red": 0, "green": 0, "blue": 255},
                    },
                    {
                        "active": False,
                        "start": 50.0,
                        "end": 3000.0,
                        "color": "FF00FF",
                        "inverted": True,
                        "reverseIntensity": True,
                        "family": "polynomial",
                        "coefficient": 0.5,
                        "rgb": {"red": 255, "green": 0, "blue": 255},
                    },
                ],
            }
        ]
    }
    doc = await get_json(client, f"/webgateway/get_image_rdefs_json/{A}/")
    assert doc == expected
    assert list(doc["rdefs"][0]) == ["id", "owner", "z", "t", "model", "c"]
    jsonp = await get_json(client, f"/webgateway/get_image_rdefs_json/{A}/?callback=f")
    assert jsonp == f"f({json.dumps(expected)})"
    body = await get_json(client, "/webgateway/get_image_rdefs_json/999999/", 404)
    assert body["error"] == "not_found"


def test_image_rdefs_lut_and_greyscale() -> None:
    channel = ChannelMeta("c", (16, 32, 48, 255), 0, 255, 3, 200, True, lut="fire.lut")
    level = LevelMeta(8, 8, 8, 8)
    meta = ImageMeta(
        1, "x", "uint8", 8, 8, 1, 1, 1, (level,), (channel,), default_model=ColorModel.GREYSCALE
    )
    (rdef,) = image_rdefs(meta)
    assert rdef["model"] == "greyscale"
    # getAllRenderingDefs adds `lut` only when one is set
    assert rdef["c"][0]["lut"] == "fire.lut"
    assert rdef["c"][0]["color"] == "102030"
    assert rdef["c"][0]["rgb"] == {"red": 16, "green": 32, "blue": 48}


async def test_open_with_offers_nothing(client: TestClient) -> None:
    # webgateway.views.open_with_options: settings.OPEN_WITH as {"open_with_options": [...]}
    assert await get_json(client, "/webgateway/open_with/") == {"open_with_options": []}
    assert (
        await get_json(client, "/webgateway/open_with/?callback=ow")
        == 'ow({"open_with_options": []})'
    )


async def test_paths_to_object_knows_no_containers(client: TestClient) -> None:
    # webclient.views.api_paths_to_object: {"paths": [[{type, id, …}, …], …]}
    url = f"/webclient/api/paths_to_object/?image={A}&page_size=50"
    assert await get_json(client, url) == {"paths": []}
    assert await get_json(client, "/webclient/api/paths_to_object/?well=A1") == {"paths": []}
    # get_long_or_default: a non-integer id is web's 400 "Invalid parameter value"
    body = await get_json(client, "/webclient/api/paths_to_object/?image=abc", 400)
    assert body["param"] == "image"
    await get_json(client, "/webclient/api/paths_to_object/?page_size=", 400)


# --- /webgateway/luts_png/ ------------------------------------------------------------------------


def _png(body: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(body))
    assert image.mode == "RGBA"
    return np.asarray(image)


async def test_luts_png_rows_follow_the_listing(
    make_iviewer_client: Callable[..., Any], tmp_path: Path
) -> None:
    # webgateway.views.luts_png: 256 wide, 10 rows per LUT in listLuts_json's order (each
    # LUT's png_index_new), opaque, then 10 rows of the channel slider's gradient: black with
    # alpha numpy.linspace(255, 0, 180) in the first 180 columns and 0 after them.
    ramp = np.arange(256, dtype=np.uint8)
    (tmp_path / "luts").mkdir()
    (tmp_path / "luts" / "00_Mine.lut").write_bytes(
        np.concatenate([ramp, ramp[::-1], np.full(256, 7, np.uint8)]).tobytes()
    )
    client = await make_iviewer_client(source={"lut_dir": str(tmp_path)})
    listing = (await get_json(client, "/webgateway/luts/"))["luts"]
    resp = await client.get("/webgateway/luts_png/")
    assert resp.status == 200 and resp.content_type == "image/png"
    sprite = _png(await resp.read())
    assert sprite.shape == (10 * (len(listing) + 1), 256, 4)
    table = LutTable(tmp_path)
    for lut in listing:
        band = sprite[10 * lut["png_index_new"] : 10 * (lut["png_index_new"] + 1)]
        expected = table.get(lut["name"])
        assert expected is not None
        assert (band[:, :, :3] == expected[np.newaxis]).all(), lut["name"]
        assert (band[:, :, 3] == 255).all()
    first = sprite[:10, :, :3]
    assert listing[0]["name"] == "00_Mine.lut"  # web sorts by lower-cased name
    assert (first[:, :, 0] == ramp).all() and (first[:, :, 1] == ramp[::-1]).all()
    gradient = sprite[-10:]
    assert (gradient[:, :, :3] == 0).all()
    assert (gradient[:, :180, 3] == np.linspace(255, 0, 180, dtype="uint8")).all()
    assert (gradient[:, 180:, 3] == 0).all()


async def test_luts_png_revalidates(client: TestClient) -> None:
    resp = await client.get("/webgateway/luts_png/?cached=false")
    assert resp.headers["Cache-Control"] == "no-cache"
    tag = resp.headers["ETag"]
    again = await client.get("/webgateway/luts_png/", headers={"If-None-Match": tag})
    assert again.status == 304
    assert _png(await resp.read()).shape[0] == 10 * (len(LutTable()) + 1)


# --- /webgateway/histogram_json/<id>/channel/<c>/ -----------------------------------------------


def omero_histogram(values: np.ndarray, low: float, high: float, bins: int) -> list[int]:
    """RawPixelsBean.getHistogram's loop, one value at a time, in Python floats (doubles)."""
    data = [0] * bins
    step = (high - low) / bins
    for v in np.asarray(values, dtype=np.float64).ravel().tolist():
        if v < low or v > high:
            continue
        try:
            position = (v - low) / step
        except ZeroDivisionError:
            position = math.nan  # Java: 0.0 / 0.0
        index = 0 if math.isnan(position) else int(position)  # Java's (int) cast
        data[min(index, bins - 1)] += 1
    return data


def a_plane(root: Path, level: int, c: int, z: int) -> np.ndarray:
    return np.asarray(zarr.open_array(str(root / f"{A}.zarr" / str(level)), mode="r")[c, z])


async def test_histogram_counts_the_level_at_least_512_square(
    client: TestClient, iviewer_root: Path
) -> None:
    # webgateway.views.histogram_json → {"data": [256 ints]}; OMERO bins over the channel's
    # global min..max, imgData's window.min..window.max (0..4095 here). A's level 1 (700×600)
    # is the coarsest at least 512 on each side.
    doc = await get_json(client, f"/webgateway/histogram_json/{A}/channel/1/?theT=0&theZ=1")
    assert list(doc) == ["data"] and len(doc["data"]) == 256
    plane = a_plane(iviewer_root, 1, 1, 1)
    expected, _edges = np.histogram(plane, bins=256, range=(0, 4095))
    assert doc["data"] == expected.tolist()
    assert sum(doc["data"]) == 700 * 600
    # defaults: theZ=0, theT=0, bins=256 (not the default plane)
    doc = await get_json(client, f"/webgateway/histogram_json/{A}/channel/0/")
    assert doc["data"] == np.histogram(a_plane(iviewer_root, 1, 0, 0), 256, (0, 4095))[0].tolist()
    resp = await client.get(f"/webgateway/histogram_json/{A}/channel/0/")
    assert (await resp.read()).startswith(b'{"data": [')  # Django's JsonResponse spacing


async def test_histogram_bins(client: TestClient, iviewer_root: Path) -> None:
    plane = a_plane(iviewer_root, 1, 0, 0)
    doc = await get_json(client, f"/webgateway/histogram_json/{A}/channel/0/?bins=16")
    assert doc["data"] == np.histogram(plane, bins=16, range=(0, 4095))[0].tolist()
    # bins ≤ 0: OMERO's server uses its default, 256
    doc = await get_json(client, f"/webgateway/histogram_json/{A}/channel/0/?bins=0")
    assert len(doc["data"]) == 256


async def test_histogram_float_plane_with_nan(client: TestClient, iviewer_root: Path) -> None:
    """B is too small for a pyramid: its full plane is counted. NaN goes to bin 0."""
    window = (await get_json(client, f"/iviewer/image_data/{B}/"))["channels"][0]["window"]
    plane = np.asarray(zarr.open_array(str(iviewer_root / f"{B}.zarr" / "0"), mode="r")[...])
    doc = await get_json(client, f"/webgateway/histogram_json/{B}/channel/0/")
    expected = omero_histogram(plane, window["min"], window["max"], 256)
    assert doc["data"] == expected
    finite = plane[np.isfinite(plane)]
    assert doc["data"][0] == 7 + int(
        np.histogram(finite, 256, (window["min"], window["max"]))[0][0]
    )


@pytest.mark.parametrize(
    ("values", "low", "high", "bins"),
    [
        (np.array([0, 1, 2, 3, 4, 5, 6, 7, 8], np.uint8), 2.0, 6.0, 4),  # both edges counted
        (np.array([5, 5, 6, 4], np.uint16), 5.0, 5.0, 8),  # low == high: 0/0, bin 0
        (np.array([1.5, np.nan, -np.inf, np.inf, 3.0], np.float32), 1.0, 3.0, 2),
        (np.array([-128, -1, 0, 127], np.int8), -128.0, 127.0, 3),
        (np.array([1, 2], np.uint8), 5.0, 1.0, 4),  # reversed range: nothing is inside
        (np.array([True, False, True]), 0.0, 1.0, 2),
        (np.array([7, 2**31, 4_000_000_000], np.uint32), 0.0, 4294967295.0, 5),
    ],
)
def test_bin_counts_follow_omero(values: np.ndarray, low: float, high: float, bins: int) -> None:
    assert bin_counts(values, low, high, bins).tolist() == omero_histogram(values, low, high, bins)


def test_bin_counts_big_endian_and_random() -> None:
    rng = np.random.default_rng(5)
    for dtype in ("uint16", "int16", ">u2", "float64", "int32"):
        values = (rng.normal(0, 3000, size=5000)).astype(dtype)
        got = bin_counts(values, -2500.5, 7000.25, 97).tolist()
        assert got == omero_histogram(values, -2500.5, 7000.25, 97), dtype


def _levels(w: int, h: int, n: int) -> tuple[LevelMeta, ...]:
    return tuple(LevelMeta(w >> i, h >> i, 256, 256) for i in range(n))


@pytest.mark.parametrize(
    ("levels", "max_pixels", "expected"),
    [
        (_levels(10000, 8000, 5), 4096**2, 3),  # 1250×1000; 625×500 is under 512 high
        (_levels(1024, 1024, 3), 4096**2, 1),  # exactly 512² qualifies
        (_levels(600, 400, 1), 4096**2, 0),  # no pyramid: the full image
        (_levels(4000, 300, 4), 4096**2, 0),  # 300 high: every level must keep that
        (_levels(4000, 4000, 4), 300_000, 3),  # 1000² is over the pixel bound: 500²
        (_levels(4000, 4000, 3), 300_000, 2),  # nothing coarser (the planner's 413)
    ],
)
def test_histogram_level(levels: tuple[LevelMeta, ...], max_pixels: int, expected: int) -> None:
    assert histogram_level(levels, max_pixels) == expected


async def test_histogram_is_cached(client: TestClient) -> None:
    url = f"/webgateway/histogram_json/{A}/channel/1/?theZ=0&bins=64"
    first = await client.get(url)
    body = await first.read()
    assert first.status == 200 and first.headers["X-Cache"] == "miss"
    assert first.headers["Cache-Control"] == "public, max-age=86400"
    assert "source;dur=" in first.headers["Server-Timing"]
    second = await client.get(url)
    assert second.headers["X-Cache"] == "memory"
    assert await second.read() == body
    assert second.headers["ETag"] == first.headers["ETag"]
    # an equivalent URL (explicit defaults, a cache buster) shares the entry
    same = await client.get(f"/webgateway/histogram_json/{A}/channel/1/?bins=64&theT=0&_=1")
    assert same.headers["X-Cache"] == "memory" and same.headers["ETag"] == first.headers["ETag"]
    not_modified = await client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert not_modified.status == 304


async def test_histogram_takes_a_render_slot(make_iviewer_client: Callable[..., Any]) -> None:
    client = await make_iviewer_client(limits={"max_concurrent_renders": 1})
    admission = client.app[ADMISSION]
    admission.renders = 1  # the only slot is taken by a render in progress
    url = f"/webgateway/histogram_json/{A}/channel/0/?theZ=1"
    refused = await client.get(url)
    assert refused.status == 503 and refused.headers["Retry-After"] == "1"
    assert (await refused.json())["error"] == "overloaded"
    admission.renders = 0
    assert (await client.get(url)).status == 200
    assert admission.renders == 0


async def test_histogram_level_under_the_pixel_limit(
    make_iviewer_client: Callable[..., Any], iviewer_root: Path
) -> None:
    client = await make_iviewer_client(limits={"max_region_pixels": 200_000})
    doc = await get_json(client, f"/webgateway/histogram_json/{A}/channel/0/")
    assert doc["data"] == np.histogram(a_plane(iviewer_root, 2, 0, 0), 256, (0, 4095))[0].tolist()
    client = await make_iviewer_client(limits={"max_region_pixels": 1000})
    body = await get_json(client, f"/webgateway/histogram_json/{A}/channel/0/", 413)
    assert body["error"] == "too_large"


@pytest.mark.parametrize(
    ("url", "status", "param"),
    [
        ("/webgateway/histogram_json/999999/channel/0/", 404, "image_id"),  # web: Http404
        (f"/webgateway/histogram_json/{A}/channel/2/", 404, "c"),  # theC ≥ sizeC
        (f"/webgateway/histogram_json/{A}/channel/0/?theZ=2", 404, "z"),  # theZ ≥ sizeZ
        (f"/webgateway/histogram_json/{A}/channel/0/?theT=1", 404, "t"),
        (f"/webgateway/histogram_json/{A}/channel/0/?theZ=-1", 400, "theZ"),  # web: plane 0
        (f"/webgateway/histogram_json/{A}/channel/0/?theT=x", 400, "theT"),  # web: 500
        (f"/webgateway/histogram_json/{A}/channel/0/?bins=many", 400, "bins"),  # web: 500
        (f"/webgateway/histogram_json/{A}/channel/0/?bins=4097", 400, "bins"),
        (f"/webgateway/histogram_json/{A}/channel/-1/", 404, None),  # no route
    ],
)
async def test_histogram_errors(
    client: TestClient, url: str, status: int, param: str | None
) -> None:
    body = await get_json(client, url, status)
    assert body.get("param") == param, body
