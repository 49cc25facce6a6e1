"""OMERO.web's plate grid and well list, against the shape written down from its source."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from idrserve.http import plategrid
from idrserve.http.plates import GRIDS
from idrserve.sources.plate import parse_plate
from tests.plates.conftest import P05, P96
from tests.plates.test_plate_source import sid

SHAPE = json.loads((Path(__file__).parent / "omeroweb_plategrid.json").read_text())
TYPES = {"string": str, "integer": int, "array": list}


def conforms(value: dict[str, Any], shape: dict[str, str]) -> None:
    assert set(value) == set(shape), (sorted(value), sorted(shape))
    for key, kind in shape.items():
        assert isinstance(value[key], TYPES[kind]) and not isinstance(value[key], bool), key


def synthetic(wells: list[str], rows: int = 32, cols: int = 48) -> Any:
    names_r = [plategrid.letter_label(i) for i in range(rows)]
    attrs = {
        "plate": {
            "rows": [{"name": n} for n in names_r],
            "columns": [{"name": str(i + 1)} for i in range(cols)],
            "wells": [{"path": w} for w in wells],
        }
    }
    plate, _ = parse_plate(1, Path("/nowhere"), attrs, 2)
    return plate


@pytest.mark.parametrize(("last_row", "last_col", "rows", "cols"), SHAPE["expand_sizes"])
def test_expand_layout_doubles_8_by_12(last_row: int, last_col: int, rows: int, cols: int) -> None:
    plate = synthetic([f"{plategrid.letter_label(last_row - 1)}/{last_col}"])
    doc, _ = plategrid.grid(plate, 0, None, "expand", str)
    assert len(doc["rowlabels"]) == rows and len(doc["collabels"]) == cols
    trim, _ = plategrid.grid(plate, 0, None, "trim", str)
    assert len(trim["rowlabels"]) == last_row and len(trim["collabels"]) == last_col


def test_shrink_drops_leading_rows_and_columns() -> None:
    doc, _ = plategrid.grid(synthetic(["C/5", "D/7"]), 0, None, "shrink", str)
    assert doc["rowlabels"] == ["C", "D"] and doc["collabels"] == [5, 6, 7]


async def test_grid_has_omero_webs_shape_and_values(plate_client: Callable[..., Any]) -> None:
    client = await plate_client()
    resp = await client.get(f"/webgateway/plate/{P96}/")
    assert resp.status == 200 and resp.content_type == "application/json"
    doc = await resp.json()
    conforms(doc, SHAPE["top_level"])
    assert doc["rowlabels"] == list("ABCDEFGH") and doc["collabels"] == list(range(1, 13))
    assert len(doc["grid"]) == 8 and all(len(r) == 12 for r in doc["grid"])
    a1 = doc["grid"][0][0]
    conforms(a1, SHAPE["well"])
    assert a1 == {
        "type": "Image",
        "id": sid(P96, 0, 0, 0),
        "name": "plate-96 [Well A1, Field 1]",
        "description": "",
        "author": "",
        "date": 0,
        "wellId": 7_000_025_510_000_000,
        "field": 0,
        "thumb_url": f"/webgateway/render_thumbnail/{sid(P96, 0, 0, 0)}/",
    }
    assert doc["image_sizes"] == [{"x": 64, "y": 64, "image_id": sid(P96, 0, 0, 0)}]
    conforms(doc["image_sizes"][0], SHAPE["image_size"])
    present = {(r, c) for r, row in enumerate(doc["grid"]) for c, w in enumerate(row) if w}
    expected = {(r, c) for r in (0, 1) for c in range(12)} | {(7, 11), (4, 4)}
    assert present == expected  # C3 (no images) and D4 (no group) are null, as empty wells
    field1 = await (await client.get(f"/webgateway/plate/{P96}/1/?size=64")).json()
    assert field1["grid"][7][11] is None  # H12 has one field
    assert field1["grid"][1][11]["id"] == sid(P96, 1, 11, 1) and field1["grid"][1][11]["field"] == 1
    assert field1["grid"][1][11]["thumb_url"].endswith(f"/{sid(P96, 1, 11, 1)}/64/")
    beyond = await (await client.get(f"/webgateway/plate/{P96}/7/")).json()
    assert all(w is None for row in beyond["grid"] for w in row) and beyond["image_sizes"] == []


async def test_grid_acquisitions_jsonp_prefix_and_memo(plate_client: Callable[..., Any]) -> None:
    client = await plate_client()
    day2 = await (await client.get(f"/webgateway/plate/{P05}/0/1/?layout=trim")).json()
    assert len(day2["grid"]) == 2 and len(day2["grid"][0]) == 3
    assert day2["grid"][1][2]["id"] == sid(P05, 1, 2, 1) and day2["grid"][1][2]["date"] == 0
    day1 = await (await client.get(f"/webgateway/plate/{P05}/0/0/?layout=trim")).json()
    assert (
        day1["grid"][0][0]["id"] == sid(P05, 0, 0, 0) and day1["grid"][0][0]["date"] == 1700000000
    )
    missing = await client.get(f"/webgateway/plate/{P05}/0/9/")
    assert missing.status == 404 and (await missing.json())["param"] == "acquisition"
    jsonp = await client.get(f"/webgateway/plate/{P05}/?callback=cb")
    assert jsonp.content_type == "application/javascript"
    assert (await jsonp.text()).startswith('cb({"grid"')
    prefixed = await (
        await client.get(f"/webgateway/plate/{P05}/", headers={"X-Forwarded-Prefix": "/idr"})
    ).json()
    assert prefixed["grid"][0][0]["thumb_url"].startswith("/idr/webgateway/render_thumbnail/")
    assert len(client.app[GRIDS]) == 4  # each distinct grid built once, then kept
    await client.get(f"/webgateway/plate/{P05}/0/1/?layout=trim")
    assert len(client.app[GRIDS]) == 4


async def test_well_children_and_runs(plate_client: Callable[..., Any]) -> None:
    client = await plate_client()
    grid = await (await client.get(f"/webgateway/plate/{P05}/")).json()
    wid = grid["grid"][0][1]["wellId"]
    both = await (await client.get(f"/webgateway/well/{wid}/children/")).json()
    assert [i["id"] for i in both] == [sid(P05, 0, 1, 0), sid(P05, 0, 1, 1)]
    assert both[1]["name"] == "plate-05 [Well A2, Field 2] [Run: day 2]"
    one = await (await client.get(f"/webgateway/well/{wid}/children/?run=1")).json()
    assert [i["id"] for i in one] == [sid(P05, 0, 1, 1)]
    for bad in (wid + 1, 12, 7_000_999_990_000_000):
        resp = await client.get(f"/webgateway/well/{bad}/children/")
        assert resp.status == 404 and (await resp.json())["error"] == "not_found"


@pytest.mark.parametrize(
    ("url", "status", "param"),
    [
        (f"/webgateway/plate/{P96}/?size=abc", 400, "size"),
        (f"/webgateway/plate/{P96}/?size=0", 400, "size"),
        (f"/webgateway/plate/{P96}/?layout=sideways", 400, "layout"),
        (f"/webgateway/plate/{P96}/?callback=alert(1)", 400, "callback"),
        (f"/webgateway/plate/{P96}/x/", 404, None),
        (f"/webgateway/plate/{P96}/99999/", 404, None),
        ("/webgateway/plate/99999999999999999999/", 404, None),
        (f"/webgateway/well/{P96}/children/?run=x", 400, "run"),
    ],
)
async def test_bad_grid_requests(
    plate_client: Callable[..., Any], url: str, status: int, param: str | None
) -> None:
    client = await plate_client()
    resp = await client.get(url)
    body = await resp.json()
    assert resp.status == status, body
    assert body["error"] in ("bad_request", "not_found")
    if param is not None:
        assert body.get("param") == param
