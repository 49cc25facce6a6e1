"""Remote (S3) chunks are cached on local disk: a repeated read never goes back to the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from idrserve.catalog import Catalog
from idrserve.model import Box, Selection
from idrserve.settings import SourceSettings
from idrserve.sources.zarr import ZarrSource
from tests.sources.conftest import multiscales, pyramid, ramp, upload_tree, write_v2

IMAGE_ID = 5151


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="testing",
        aws_secret_access_key="testing", region_name="us-east-1",
    )  # fmt: skip


async def test_s3_chunks_come_from_the_disk_cache(s3_server: str, tmp_path: Path) -> None:
    local = tmp_path / f"{IMAGE_ID}.zarr"
    levels = pyramid(ramp((2, 256, 256), "uint16", seed=5), 2)
    attrs = {"multiscales": [multiscales("cyx", 2, version="0.4")]}
    write_v2(local, levels, attrs, chunks=[(1, 64, 64), (1, 64, 64)])
    upload_tree(s3_server, "cached", f"zarr/{IMAGE_ID}.zarr", local)
    cache_dir = tmp_path / "chunks"
    settings = SourceSettings(
        zarr_root="s3://cached/zarr", s3_endpoint=s3_server, chunk_cache_dir=cache_dir
    )
    source = ZarrSource(settings, Catalog(settings))
    try:
        first = Selection(0, 0, 0, 1, (0, 1), Box(0, 0, 128, 128))
        got = await source.read(IMAGE_ID, first)
        np.testing.assert_array_equal(got[:, 0], levels[0][:, :128, :128])
        cached = [p for p in cache_dir.rglob("*") if p.is_file()]
        assert len(cached) >= 8  # 2 channels x 2 x 2 chunks of 64²
        # Remove every chunk from the bucket (metadata stays): the chunks already read still
        # come back from the disk cache, and others read as missing (fill value 0).
        client = s3_client(s3_server)
        listing = client.list_objects_v2(Bucket="cached", Prefix=f"zarr/{IMAGE_ID}.zarr/")
        for obj in listing["Contents"]:
            if not obj["Key"].endswith((".zarray", ".zattrs", ".zgroup")):
                client.delete_object(Bucket="cached", Key=obj["Key"])
        again = await source.read(IMAGE_ID, first)
        np.testing.assert_array_equal(again, got)
        elsewhere = await source.read(IMAGE_ID, Selection(0, 0, 0, 1, (0,), Box(128, 128, 64, 64)))
        assert not elsewhere.any()
    finally:
        await source.aclose()
