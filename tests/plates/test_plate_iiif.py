"""The plate's IIIF Presentation 3 manifest: one canvas per well, each a working image service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.plates.conftest import P05, P96
from tests.plates.test_plate_source import sid


async def test_plate_manifest_pages_through_wells(plate_client: Callable[..., Any]) -> None:
    client = await plate_client()
    resp = await client.get(f"/iiif/plates/{P96}/manifest.json")
    assert resp.status == 200 and resp.content_type == "application/ld+json"
    doc = await resp.json(content_type=None)
    assert doc["type"] == "Manifest" and doc["label"] == {"none": ["plate-96"]}
    assert doc["@context"] == "http://iiif.io/api/presentation/3/context.json"
    labels = [c["label"]["none"][0] for c in doc["items"]]
    # A1..A12, B1..B12, H12; E5's field 0 is broken and has no canvas
    assert labels == [f"{r}{c}" for r in "AB" for c in range(1, 13)] + ["H12"]
    ids = [c["id"] for c in doc["items"]]
    assert len(set(ids)) == len(ids)
    canvas = doc["items"][13]  # B2
    body = canvas["items"][0]["items"][0]["body"]
    service = body["service"][0]["id"]
    assert service.endswith(f"/iiif/3/{sid(P96, 1, 1, 0)};z=0")  # its default plane
    assert canvas["width"] == canvas["height"] == 64
    base = str(client.make_url("")).rstrip("/")
    info = await client.get(service.removeprefix(base) + "/info.json")
    assert info.status == 200 and (await info.json(content_type=None))["width"] == 64
    thumb = await client.get(canvas["thumbnail"][0]["id"].removeprefix(base))
    assert thumb.status == 200 and thumb.content_type == "image/jpeg"
    v5 = await (await client.get(f"/iiif/plates/{P05}/manifest.json")).json(content_type=None)
    assert len(v5["items"]) == 6
    missing = await client.get("/iiif/plates/424242/manifest.json")
    assert missing.status == 404 and (await missing.json())["error"] == "not_found"
