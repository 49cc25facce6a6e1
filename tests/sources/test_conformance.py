"""ZarrSource against every OME-Zarr flavour we expect in the wild, written by real writers."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from ome_zarr.format import FormatV04
from ome_zarr.writer import write_image

from idrserve.catalog import Catalog
from idrserve.settings import SourceSettings
from idrserve.sources.zarr import ZarrSource
from tests.sources.conformance import Case, SourceConformance
from tests.sources.conftest import (
    chunks_for,
    multiscales,
    omero_block,
    pyramid,
    ramp,
    upload_tree,
    write_v2,
    write_v3,
)

IMAGE_ID = 4242


async def open_case(
    settings: SourceSettings, axes: str, levels: list[np.ndarray], tiles: list[tuple[int, int]]
) -> AsyncIterator[Case]:
    source = ZarrSource(settings, Catalog(settings))
    try:
        yield Case(source, IMAGE_ID, axes, levels, tiles)
    finally:
        await source.aclose()


def writer_omero(block: dict[str, Any]) -> Any:
    """The `omero` block as ome-zarr-py's writer takes it: a dict up to 0.18, its pydantic
    model from the rewrite on (0.19+, which pip picks on Python >= 3.12), whose setter refuses
    a dict although write_image's signature still names one."""
    if importlib.util.find_spec("ome_zarr.classes") is None:
        return block
    from ome_zarr_models.common.omero import Omero

    return Omero.model_validate(block)


def tiles_of(chunks: list[tuple[int, ...]]) -> list[tuple[int, int]]:
    return [(c[-1], c[-2]) for c in chunks]


class TestOmeZarrPy04WithOmero(SourceConformance):
    """ome-zarr-py's writer, NGFF 0.4, `omero` block, paths s0..s2, zstd, 64² chunks."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        data = ramp((2, 3, 300, 250), "uint16")
        group = zarr.open_group(tmp_path / f"{IMAGE_ID}.zarr", mode="w", zarr_format=2)
        omero = omero_block(["a", "b"], ["FF0000", "00ff00"])
        write_image(
            data, group, axes="czyx", fmt=FormatV04(), scale_factors=(2, 4),
            storage_options={"chunks": (1, 1, 64, 64)}, omero=writer_omero(omero),
        )  # fmt: skip
        # Compare with exactly what ome-zarr-py wrote (its own downsampling).
        levels = [np.asarray(group[p][...]) for p in ("s0", "s1", "s2")]
        settings = SourceSettings(zarr_root=str(tmp_path))
        async for c in open_case(settings, "czyx", levels, [(64, 64)] * 3):
            yield c

    async def test_omero_block_is_used(self, case: Case) -> None:
        meta = await case.source.meta(case.image_id)
        assert [ch.label for ch in meta.channels] == ["a", "b"]
        assert [ch.color for ch in meta.channels] == [(255, 0, 0, 255), (0, 255, 0, 255)]
        assert [(ch.start, ch.end) for ch in meta.channels] == [(10, 5000), (11, 5001)]
        assert [(ch.window_min, ch.window_max) for ch in meta.channels] == [(0, 60000)] * 2


class TestOmeZarrPy04NoOmero(SourceConformance):
    """ome-zarr-py's writer without an `omero` block: every rendering default applies."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        data = ramp((3, 200, 180), "uint16", seed=3)
        group = zarr.open_group(tmp_path / f"{IMAGE_ID}.zarr", mode="w", zarr_format=2)
        write_image(data, group, axes="cyx", fmt=FormatV04(), scale_factors=(2,))
        levels = [np.asarray(group[p][...]) for p in ("s0", "s1")]
        settings = SourceSettings(zarr_root=str(tmp_path))
        async for c in open_case(settings, "cyx", levels, []):
            yield c

    async def test_defaults(self, case: Case) -> None:
        meta = await case.source.meta(case.image_id)
        assert [ch.label for ch in meta.channels] == ["0", "1", "2"]
        assert [ch.color[:3] for ch in meta.channels] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
        assert all(ch.active for ch in meta.channels)
        assert meta.default_model.value == "color"
        low = case.levels[-1]
        for c, ch in enumerate(meta.channels):
            values = low[c][low[c] != 0].astype(np.float64)
            lo, hi = np.percentile(values, [0.1, 99.9])
            assert ch.start == pytest.approx(lo)
            assert ch.end == pytest.approx(hi)
            assert (ch.window_min, ch.window_max) == (0.0, 65535.0)


class TestNgff05Sharded(SourceConformance):
    """zarr-python directly, NGFF 0.5 / Zarr v3, sharded, t,c,y,x with T=2."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        levels = pyramid(ramp((2, 2, 300, 260), "uint16", seed=5), 3)
        chunks = chunks_for(levels, (32, 32))
        shards = [(1, 1, 64, 96)] * 3
        ome = {"version": "0.5", "multiscales": [multiscales("tcyx", 3, version=None)]}
        write_v3(tmp_path / f"{IMAGE_ID}.zarr", levels, ome, "tcyx", chunks=chunks, shards=shards)
        settings = SourceSettings(zarr_root=str(tmp_path))
        async for c in open_case(settings, "tcyx", levels, tiles_of(chunks)):
            yield c


class TestNgff05DotSeparatorUnsharded(SourceConformance):
    """Zarr v3 `default` chunk keys with `.` separator, no sharding, float32, z,y,x."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        levels = pyramid(ramp((3, 90, 70), "float32"), 2)
        chunks = chunks_for(levels, (40, 30))
        ome = {"version": "0.5", "multiscales": [multiscales("zyx", 2, version=None)]}
        write_v3(tmp_path / f"{IMAGE_ID}.zarr", levels, ome, "zyx", chunks=chunks, separator=".")
        settings = SourceSettings(zarr_root=str(tmp_path))
        async for c in open_case(settings, "zyx", levels, tiles_of(chunks)):
            yield c


class TestNgff01DotSeparatorNoAxes(SourceConformance):
    """0.1: 5D t,c,z,y,x implied (no axes), `.` chunk separator, no transforms."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        levels = pyramid(ramp((1, 2, 3, 120, 100), "uint16", seed=1), 2)
        chunks = [(1, 1, 1, 120, 100), (1, 1, 1, 60, 50)]  # whole planes, as 2020 exports
        attrs = {"multiscales": [multiscales("tczyx", 2, version="0.1", axes_style="none")]}
        write_v2(tmp_path / f"{IMAGE_ID}.zarr", levels, attrs, chunks=chunks, separator=".")
        settings = SourceSettings(zarr_root=str(tmp_path))
        async for c in open_case(settings, "tczyx", levels, tiles_of(chunks)):
            yield c


class TestNgff03StringAxes(SourceConformance):
    """0.3: axes as a list of strings, 3D c,y,x, no coordinate transformations."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        levels = pyramid(ramp((2, 130, 150), "uint8", seed=2), 3)
        chunks = chunks_for(levels, (64, 64))
        attrs = {"multiscales": [multiscales("cyx", 3, version="0.3", axes_style="strings")]}
        write_v2(tmp_path / f"{IMAGE_ID}.zarr", levels, attrs, chunks=chunks)
        settings = SourceSettings(zarr_root=str(tmp_path))
        async for c in open_case(settings, "cyx", levels, tiles_of(chunks)):
            yield c


class TestBigEndian(SourceConformance):
    """`>u2` data (old bioformats2raw output), z,y,x; served native-endian."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        levels = [a.astype(">u2") for a in pyramid(ramp((4, 100, 90), "uint16", seed=4), 2)]
        chunks = chunks_for(levels, (48, 48))
        attrs = {"multiscales": [multiscales("zyx", 2, version="0.4")]}
        write_v2(tmp_path / f"{IMAGE_ID}.zarr", levels, attrs, chunks=chunks)
        settings = SourceSettings(zarr_root=str(tmp_path))
        async for c in open_case(settings, "zyx", levels, tiles_of(chunks)):
            yield c

    async def test_dtype_is_native_name(self, case: Case) -> None:
        assert (await case.source.meta(case.image_id)).dtype == "uint16"


class Test2D(SourceConformance):
    """y,x only, int16 with negative values, single level."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        levels = [ramp((77, 91), "int16", seed=6) - 1000]
        attrs = {"multiscales": [multiscales("yx", 1, version="0.4")]}
        write_v2(tmp_path / f"{IMAGE_ID}.zarr", levels, attrs, chunks=[(32, 40)])
        settings = SourceSettings(zarr_root=str(tmp_path))
        async for c in open_case(settings, "yx", levels, [(40, 32)]):
            yield c


class Test4DTimeZ(SourceConformance):
    """t,z,y,x (no channel axis), T=3."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        levels = pyramid(ramp((3, 2, 64, 80), "uint16", seed=7), 2)
        chunks = chunks_for(levels, (32, 32))
        attrs = {"multiscales": [multiscales("tzyx", 2, version="0.4")]}
        write_v2(tmp_path / f"{IMAGE_ID}.zarr", levels, attrs, chunks=chunks)
        settings = SourceSettings(zarr_root=str(tmp_path))
        async for c in open_case(settings, "tzyx", levels, tiles_of(chunks)):
            yield c


class Test5D(SourceConformance):
    """t,c,z,y,x with every axis > 1, uint32."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        levels = pyramid(ramp((2, 3, 2, 70, 66), "uint32", seed=8), 2)
        chunks = chunks_for(levels, (32, 32))
        attrs = {
            "multiscales": [multiscales("tczyx", 2, version="0.4")],
            "omero": omero_block(["a", "b", "c"], ["FF0000", "00FF00", "0000FF"], defaultZ=1),
        }
        write_v2(tmp_path / f"{IMAGE_ID}.zarr", levels, attrs, chunks=chunks)
        settings = SourceSettings(zarr_root=str(tmp_path))
        async for c in open_case(settings, "tczyx", levels, tiles_of(chunks)):
            yield c


class TestPerLevelChunkShapes(SourceConformance):
    """Chunk shapes differ per level (whole-level chunks at the bottom, as IDR 9822152)."""

    direct_reads = True  # local Zarr v2: the direct chunk reader (sources/direct.py)

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        levels = pyramid(ramp((2, 1, 257, 301), "uint16", seed=9), 3)
        chunks = [(1, 1, 64, 100), (2, 1, 50, 30), (2, 1, 64, 75)]
        attrs = {"multiscales": [multiscales("czyx", 3, version="0.4")]}
        write_v2(tmp_path / f"{IMAGE_ID}.zarr", levels, attrs, chunks=chunks)
        settings = SourceSettings(zarr_root=str(tmp_path), direct_reads=self.direct_reads)
        async for c in open_case(settings, "czyx", levels, tiles_of(chunks)):
            yield c


def _small_image(path: Path, sharded: bool) -> tuple[str, list[np.ndarray], list[Any]]:
    levels = pyramid(ramp((2, 2, 150, 140), "uint16", seed=11), 2)
    chunks = chunks_for(levels, (64, 64))
    if sharded:
        ome = {"version": "0.5", "multiscales": [multiscales("czyx", 2, version=None)]}
        write_v3(path, levels, ome, "czyx", chunks=chunks, shards=[(1, 1, 128, 128)] * 2)
    else:
        attrs = {"multiscales": [multiscales("czyx", 2, version="0.4")]}
        write_v2(path, levels, attrs, chunks=chunks)
    return "czyx", levels, tiles_of(chunks)


class TestHttpRoot(SourceConformance):
    """An `http://` zarr_root (ids probed) served by a real HTTP server, Zarr v2."""

    @pytest.fixture
    async def case(self, http_root: tuple[Path, str]) -> AsyncIterator[Case]:
        root, url = http_root
        target = root / "v2" / f"{IMAGE_ID}.zarr"
        shutil.rmtree(target, ignore_errors=True)
        axes, levels, tiles = _small_image(target, sharded=False)
        settings = SourceSettings(zarr_root=f"{url}/v2")
        async for c in open_case(settings, axes, levels, tiles):
            yield c


class TestHttpCatalogSharded(SourceConformance):
    """An `https?://` catalog entry to a sharded NGFF 0.5 image over HTTP (Range requests)."""

    @pytest.fixture
    async def case(self, http_root: tuple[Path, str], tmp_path: Path) -> AsyncIterator[Case]:
        root, url = http_root
        target = root / "v3" / "any-name.zarr"
        shutil.rmtree(target, ignore_errors=True)
        axes, levels, tiles = _small_image(target, sharded=True)
        catalog = tmp_path / "catalog.csv"
        catalog.write_text(f"id,path\n{IMAGE_ID},{url}/v3/any-name.zarr\n")
        settings = SourceSettings(catalog=catalog)
        async for c in open_case(settings, axes, levels, tiles):
            yield c


class TestS3(SourceConformance):
    """An `s3://` root on moto's S3 server (anonymous, path-style, custom endpoint), v3 sharded."""

    @pytest.fixture
    async def case(self, s3_server: str, tmp_path: Path) -> AsyncIterator[Case]:
        local = tmp_path / f"{IMAGE_ID}.zarr"
        axes, levels, tiles = _small_image(local, sharded=True)
        upload_tree(s3_server, "idr", f"zarr/v0.5/{IMAGE_ID}.zarr", local)
        settings = SourceSettings(zarr_root="s3://idr/zarr/v0.5", s3_endpoint=s3_server)
        async for c in open_case(settings, axes, levels, tiles):
            yield c


class TestS3Signed(SourceConformance):
    """An `s3://` catalog entry read with credentials from the environment (signed requests)."""

    @pytest.fixture
    async def case(
        self, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> AsyncIterator[Case]:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        local = tmp_path / "img.zarr"
        axes, levels, tiles = _small_image(local, sharded=False)
        upload_tree(s3_server, "private", "deep/img.zarr", local)
        catalog = tmp_path / "catalog.json"
        catalog.write_text(f'[{{"image_id": {IMAGE_ID}, "uri": "s3://private/deep/img.zarr"}}]')
        settings = SourceSettings(catalog=catalog, s3_endpoint=s3_server, s3_anonymous=False)
        async for c in open_case(settings, axes, levels, tiles):
            yield c


class TestPerLevelChunkShapesThroughZarr(TestPerLevelChunkShapes):
    """The same v2 data read through zarr-python (zarrs) instead of the direct chunk reader."""

    direct_reads = False
