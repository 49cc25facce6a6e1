"""`/zarr/plates/{id}.zarr/` opened by ome-zarr-py and zarr-python as the HCS plate it is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Plate as PlateSpec
from ome_zarr.reader import Reader

from tests.plates.conftest import P05, P96, PlateData


def read_plate(url: str) -> tuple[Any, np.ndarray]:
    """What a notebook does: open the plate with ome-zarr-py, compute its full-size image."""
    location = parse_url(url)
    assert location is not None, url
    node = next(iter(Reader(location)()))
    assert any(isinstance(s, PlateSpec) for s in node.specs)
    return node, np.asarray(node.data[0].compute())


@pytest.mark.parametrize("view", ["zarr/plates", "zarr/v3/plates"])
async def test_ome_zarr_py_opens_the_plate(
    plate_client: Callable[..., Any], plate_data: PlateData, view: str
) -> None:
    client = await plate_client()
    base = str(client.make_url("")).rstrip("/")
    node, pixels = await asyncio.to_thread(read_plate, f"{base}/{view}/{P05}.zarr")
    plate = node.metadata if isinstance(node.metadata, dict) else {}
    assert node.zarr.root_attrs["plate"]["name"] == "plate-05" or plate
    # 2 rows × 3 columns of 64² first fields, in plate order
    stored = plate_data.root / f"{P05}.zarr"
    assert pixels.shape[-2:] == (128, 192)
    for r, row in enumerate("AB"):
        for c, col in enumerate("123"):
            field = zarr.open_array(str(stored / row / col / "0" / "s0"), mode="r")[0]
            got = pixels.reshape(-1, 128, 192)[0, r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64]
            np.testing.assert_array_equal(got, field)


async def test_stored_v2_documents_pass_through(
    plate_client: Callable[..., Any], plate_data: PlateData
) -> None:
    client = await plate_client()
    stored = plate_data.root / "screen" / f"{P96}.zarr"
    for key in (".zattrs", "A/1/.zattrs"):
        resp = await client.get(f"/zarr/plates/{P96}.zarr/{key}")
        assert resp.status == 200 and await resp.read() == (stored / key).read_bytes()
    group = await client.get(f"/zarr/plates/{P96}.zarr/A/.zgroup")
    assert json.loads(await group.read()) == {"zarr_format": 2}
    v3 = await (await client.get(f"/zarr/v3/plates/{P96}.zarr/zarr.json")).json()
    assert v3["attributes"]["ome"]["version"] == "0.5"
    assert len(v3["attributes"]["ome"]["plate"]["wells"]) == 24 + 4
    index = await (await client.get(f"/zarr/plates/{P96}.zarr/")).json()
    assert index["plate_id"] == P96 and "C/3" not in index["wells"]


async def test_zarr_python_reads_a_field_through_the_plate(
    plate_client: Callable[..., Any], plate_data: PlateData
) -> None:
    client = await plate_client()
    url = str(client.make_url(f"/zarr/plates/{P96}.zarr"))

    def read() -> np.ndarray:
        group = zarr.open_group(url, mode="r", zarr_format=2)
        return np.asarray(group["B/7/1/0"][:])

    got = await asyncio.to_thread(read)
    stored = zarr.open_array(str(plate_data.root / "screen" / f"{P96}.zarr/B/7/1/s0"), mode="r")
    np.testing.assert_array_equal(got, stored[:])


@pytest.mark.parametrize(
    ("key", "status"),
    [
        ("../x/.zattrs", 404),  # the client resolves `..`: no route
        ("A\\1/.zattrs", 400),  # a backslash
        ("A//1/.zattrs", 400),  # an empty segment
        ("Z/1/.zattrs", 404),  # no such row
        ("C/.zattrs", 404),  # rows have no attributes
        ("D/4/.zattrs", 404),  # listed, no group
        ("A/1/9/.zattrs", 404),  # no such field
        ("A/1/0/7/.zarray", 404),  # no such level
        ("A/1/0/0/99.99.99", 404),  # no such chunk
        ("zarr.json", 404),  # the v2 view has no v3 documents
    ],
)
async def test_bad_plate_store_keys(
    plate_client: Callable[..., Any], key: str, status: int
) -> None:
    client = await plate_client()
    resp = await client.get(f"/zarr/plates/{P96}.zarr/{key}")
    assert resp.status == status, key
    assert (await resp.json())["error"] in ("bad_request", "not_found")
