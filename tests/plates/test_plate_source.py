"""Plates as sources: how plate ids and field image ids are found, and fields served as images."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from aiohttp.test_utils import TestClient
from PIL import Image

from idrserve.app import create_app
from idrserve.settings import load_settings
from idrserve.sources.plate import (
    FIELD_BASE,
    decode_scheme_id,
    letter_label,
    scheme_image_id,
)
from tests.plates.conftest import MAPPED_BASE, P05, P96, P384, PEDGE, PMAP, PlateData

GREY = "c=1|0:255$FFFFFF&m=g&format=png"


def sid(plate: int, row: int, col: int, field: int) -> int:
    """The documented scheme, written out independently of the code under test."""
    return 8_000_000_000_000_000 + plate * 10_000_000 + row * 100_000 + col * 1_000 + field


def test_scheme_ids_round_trip_and_stay_exact_in_javascript() -> None:
    assert scheme_image_id(2551, 1, 11, 3) == sid(2551, 1, 11, 3) == 8_000_025_510_111_003
    assert decode_scheme_id(sid(2551, 1, 11, 3)) == (2551, 1, 11, 3)
    top = scheme_image_id(10**8 - 1, 99, 99, 999)
    assert top < 2**53 and float(top) == top
    assert scheme_image_id(1, 100, 0, 0) == -1  # beyond the scheme: needs the mapping file
    assert scheme_image_id(10**8, 0, 0, 0) == -1
    assert decode_scheme_id(FIELD_BASE - 1) is None
    assert decode_scheme_id(12345) is None


def test_letter_labels_follow_omero() -> None:
    assert [letter_label(i) for i in (0, 25, 26, 27, 100)] == ["A", "Z", "AA", "AB", "CW"]


async def _png(client: Any, url: str) -> np.ndarray:
    resp = await client.get(url)
    assert resp.status == 200, await resp.text()
    return np.asarray(Image.open(io.BytesIO(await resp.read())))


async def test_every_field_is_served_pixel_exact(
    plate_client: Callable[..., Any], plate_data: PlateData
) -> None:
    """Each field of the 96-well (0.4) and the 0.5 plate, by its scheme id, renders exactly
    the stored level 0; one field per plate also equals the same field catalogued as an image."""
    client = await plate_client()
    checked = 0
    for pid, path in (
        (P96, plate_data.root / "screen" / f"{P96}.zarr"),
        (P05, plate_data.root / f"{P05}.zarr"),
    ):
        api = await (await client.get(f"/api/v1/plates/{pid}")).json()
        for well in api["wells"]:
            for f in well["fields"]:
                if well["path"] == "E/5" and f["index"] == 0:
                    continue  # the broken field (its own test)
                iid = f["image_id"]
                assert iid == sid(pid, well["row"], well["column"], f["index"])
                stored = zarr.open_array(str(path / f["path"] / "s0"), mode="r")[0]
                got = await _png(
                    client, f"/webgateway/render_image_region/{iid}/0/0/?region=0,0,64,64&{GREY}"
                )
                np.testing.assert_array_equal(got[..., 0], stored)
                checked += 1
    assert checked == 24 * 2 + 1 + 1 + 12
    for field_id, catalog_id in (
        (sid(P96, 0, 0, 0), 50001),
        (sid(P96, 1, 11, 1), 50002),
        (sid(P05, 1, 2, 1), 50003),
    ):
        a = await client.get(f"/webgateway/render_image_region/{field_id}/0/0/?tile=0,0,0,32,32")
        b = await client.get(f"/webgateway/render_image_region/{catalog_id}/0/0/?tile=0,0,0,32,32")
        assert a.status == b.status == 200
        assert await a.read() == await b.read()


async def test_imgdata_of_a_field_names_its_well(plate_client: Callable[..., Any]) -> None:
    client = await plate_client()
    iid = sid(P96, 1, 11, 1)
    data = await (await client.get(f"/webgateway/imgData/{iid}/")).json()
    meta = data["meta"]
    assert meta["wellId"] == 7_000_025_510_111_000
    assert meta["wellSampleId"] == 6_000_025_510_111_001
    assert meta["imageName"] == "plate-96 [Well B12, Field 2]"
    assert data["plate"] == {
        "id": P96,
        "name": "plate-96",
        "well": "B12",
        "wellId": 7_000_025_510_111_000,
        "row": 1,
        "column": 11,
        "rowName": "B",
        "columnName": "12",
        "field": 1,
        "fieldPath": "1",
        "acquisition": None,
        "fieldCount": 2,
    }
    assert data["size"]["width"] == 64 and data["id"] == iid
    # the same field catalogued as a plain image is just an image
    plain = await (await client.get("/webgateway/imgData/50002/")).json()
    assert plain["meta"]["wellId"] == "" and "plate" not in plain
    v5 = await (await client.get(f"/webgateway/imgData/{sid(P05, 0, 1, 1)}/")).json()
    assert v5["plate"]["acquisition"] == 1 and v5["plate"]["well"] == "A2"


async def test_mapped_plate_and_a_plate_id_that_is_also_an_image_id(
    plate_client: Callable[..., Any],
) -> None:
    client = await plate_client()
    data = await (await client.get(f"/webgateway/imgData/{MAPPED_BASE + 3}/")).json()
    assert data["plate"]["id"] == PMAP and data["plate"]["well"] == "B2"
    # a plate whose ids are mapped has no scheme ids
    resp = await client.get(f"/webgateway/imgData/{sid(PMAP, 0, 0, 0)}/")
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    # plate 7 and image 7 are different things
    image7 = await (await client.get(f"/webgateway/imgData/{PMAP}/")).json()
    assert "plate" not in image7 and image7["size"]["width"] == 64
    grid = await (await client.get(f"/webgateway/plate/{PMAP}/1/")).json()
    assert grid["grid"][0][0]["id"] == MAPPED_BASE + 2
    assert grid["grid"][1][1] is None  # B2 has one field only


async def test_unknown_and_not_a_plate_are_404(plate_client: Callable[..., Any]) -> None:
    client = await plate_client()
    for pid in (424242, 50001):  # nothing there; an image, not a plate
        resp = await client.get(f"/webgateway/plate/{pid}/")
        body = await resp.json()
        assert resp.status == 404 and body["error"] == "not_found" and str(pid) in body["detail"]
        assert (await client.get(f"/api/v1/plates/{pid}")).status == 404
    resp = await client.get(f"/webgateway/imgData/{sid(P96, 3, 3, 0)}/")  # D/4: no group
    assert resp.status == 404
    resp = await client.get(f"/webgateway/imgData/{sid(424242, 0, 0, 0)}/")
    assert resp.status == 404
    # a plate's own id asked for as an image: a 404 that says it is a plate, not a 502
    resp = await client.get(f"/webgateway/imgData/{P96}/")
    body = await resp.json()
    assert resp.status == 404 and "HCS plate" in body["detail"], body


async def test_broken_field_fails_alone(plate_client: Callable[..., Any]) -> None:
    client = await plate_client()
    bad = await client.get(f"/webgateway/imgData/{sid(P96, 4, 4, 0)}/")
    assert bad.status == 502 and (await bad.json())["error"] == "source_error"
    good = await client.get(f"/webgateway/imgData/{sid(P96, 4, 4, 1)}/")
    assert good.status == 200
    grid = await (await client.get(f"/webgateway/plate/{P96}/")).json()
    assert grid["grid"][4][4]["id"] == sid(P96, 4, 4, 0)  # listed; its thumbnail fails alone
    thumbs = await (
        await client.get(
            f"/webgateway/get_thumbnails/?id={sid(P96, 4, 4, 0)}&id={sid(P96, 4, 4, 1)}"
        )
    ).json()
    assert thumbs[str(sid(P96, 4, 4, 0))] is None
    assert thumbs[str(sid(P96, 4, 4, 1))].startswith("data:image/jpeg;base64,")


async def test_rows_beyond_z_and_columns_beyond_99(plate_client: Callable[..., Any]) -> None:
    client = await plate_client()
    api = await (await client.get(f"/api/v1/plates/{PEDGE}")).json()
    by_path = {w["path"]: w for w in api["wells"]}
    assert by_path["AB/1"]["name"] == "AB1" and by_path["AB/1"]["row"] == 27
    assert by_path["AB/1"]["fields"][0]["image_id"] == sid(PEDGE, 27, 0, 0)
    # column index 100 is beyond the scheme: no id, said so, and the grid shows no image
    assert by_path["A/101"]["fields"][0]["image_id"] is None
    assert by_path["A/101"]["wellId"] is None
    grid = await (await client.get(f"/webgateway/plate/{PEDGE}/?layout=trim")).json()
    assert len(grid["rowlabels"]) == 28 and grid["rowlabels"][-2:] == ["AA", "AB"]
    assert len(grid["collabels"]) == 101 and grid["collabels"][-1] == 101
    assert grid["grid"][27][0]["id"] == sid(PEDGE, 27, 0, 0)
    assert grid["grid"][0][100] is None
    data = await (await client.get(f"/webgateway/imgData/{sid(PEDGE, 27, 0, 0)}/")).json()
    assert data["plate"]["well"] == "AB1"


@pytest.mark.parametrize("plate", [P384])
async def test_sparse_plate_lists_only_its_wells(
    plate_client: Callable[..., Any], plate: int
) -> None:
    client = await plate_client()
    api = await (await client.get(f"/api/v1/plates/{plate}")).json()
    assert len(api["wells"]) == 40 and len(api["rows"]) == 16 and len(api["columns"]) == 24
    assert api["image_ids"] == "scheme" and api["problems"] == []


async def test_plates_over_http(
    plate_data: PlateData,
    http_root: tuple[Path, str],
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """The same plates read from an HTTP server (Range-capable, a subprocess) answer as from
    local disk: the 0.4 plate and the 0.5 (Zarr v3) one."""
    served, url = http_root
    for pid, src in (
        (P96, plate_data.root / "screen" / f"{P96}.zarr"),
        (P05, plate_data.root / f"{P05}.zarr"),
    ):
        shutil.copytree(src, served / f"plate-{pid}.zarr", dirs_exist_ok=True)
    plates = tmp_path / "plates.csv"
    plates.write_text(
        f"plate_id,path\n{P96},{url}/plate-{P96}.zarr\n{P05},{url}/plate-{P05}.zarr\n"
    )
    remote: TestClient = await aiohttp_client(
        create_app(load_settings({"source": {"plates": str(plates)}}))
    )
    local: TestClient = await aiohttp_client(
        create_app(load_settings({"source": {"zarr_root": str(plate_data.root)}}))
    )
    for pid in (P96, P05):
        a = await (await remote.get(f"/webgateway/plate/{pid}/1/")).json()
        b = await (await local.get(f"/webgateway/plate/{pid}/1/")).json()
        assert a == b and a["image_sizes"]
    for iid in (sid(P96, 1, 6, 1), sid(P05, 1, 2, 0)):
        url_ = f"/webgateway/render_image_region/{iid}/0/0/?region=0,0,64,64&{GREY}"
        ra, rb = await remote.get(url_), await local.get(url_)
        assert ra.status == rb.status == 200
        assert await ra.read() == await rb.read()
    broken = await remote.get(f"/webgateway/imgData/{sid(P96, 4, 4, 0)}/")
    assert broken.status == 502
