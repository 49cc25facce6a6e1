"""HCS plates written by ome-zarr-py (`write_plate_metadata`, `write_well_metadata`,
`write_multiscale`), small and written once per session.

* 2551: a 96-well plate (NGFF 0.4), rows A-B fully filled with 2 fields a well, H/12 with one
  field, C/3 a well group without images, D/4 listed but never written, E/5 with a broken
  field 0 (its multiscales names a level that does not exist) and a good field 1.
* 3001: a sparse 384-well plate (0.4), 40 wells of one 256×256 field with three levels.
* 5005: a 0.5 plate (Zarr v3), 2×3 wells, 2 fields in two acquisitions.
* 4004: rows beyond Z and a column beyond 99 (0.4).
* 7: a plate listed in the plates file (not `<id>.zarr`), its field ids from the mapping file;
  image 7 is an ordinary image under the root too.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from aiohttp.test_utils import TestClient
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_multiscale, write_plate_metadata, write_well_metadata

from idrserve.app import create_app
from idrserve.settings import load_settings
from tests.sources.conftest import http_root  # noqa: F401  (a plate over HTTP)

P96, P384, P05, PEDGE, PMAP = 2551, 3001, 5005, 4004, 7
MAPPED_BASE = 900_000  # field image ids of plate 7 in the mapping file


def field_data(seed: int, side: int) -> np.ndarray:
    """(c=1, y, x) uint8 with values that differ per field and per pixel."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(1, side, side), dtype=np.uint8)


_TEMPLATES: dict[tuple[Any, ...], Path] = {}


def _pyramid(data: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [data]
    for _ in range(levels - 1):
        out.append(np.ascontiguousarray(out[-1][:, ::2, ::2]))
    return out


def write_field(group: zarr.Group, data: np.ndarray, levels: int, fmt: Any, chunk: int) -> None:
    """The first field of a kind is written by ome-zarr-py's `write_multiscale`; later ones
    copy its groups and arrays and write their own pixels into them (ten times faster, the
    metadata still ome-zarr-py's own)."""
    pyramid = _pyramid(data, levels)
    kind = (data.shape, data.dtype.str, levels, type(fmt).__name__, chunk)
    here = Path(str(group.store.root)) / group.path  # type: ignore[attr-defined]
    template = _TEMPLATES.get(kind)
    if template is None or not template.exists():
        write_multiscale(
            pyramid,
            group,
            fmt=fmt,
            axes="cyx",
            storage_options={"chunks": (1, chunk, chunk)},
            name="field",
        )
        _TEMPLATES[kind] = here
        return
    shutil.copytree(template, here, dirs_exist_ok=True)
    for i, level in enumerate(pyramid):
        zarr.open_array(str(here / f"s{i}"), mode="r+")[...] = level


def write_plate(
    path: Path,
    rows: list[str],
    columns: list[str],
    wells: dict[str, list[dict[str, Any]]],
    *,
    fmt: Any,
    side: int = 64,
    levels: int = 2,
    chunk: int = 64,
    listed_only: tuple[str, ...] = (),
    acquisitions: list[dict[str, Any]] | None = None,
    name: str | None = None,
    seed: int = 0,
) -> None:
    """`wells` maps `ROW/COL` to its images; `listed_only` wells are in the plate metadata
    but have no group at all."""
    zarr_format = 3 if isinstance(fmt, FormatV05) else 2
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    field_count = max((len(v) for v in wells.values()), default=0)
    write_plate_metadata(
        root,
        rows,
        columns,
        sorted([*wells, *listed_only]),
        fmt=fmt,
        acquisitions=acquisitions,
        field_count=field_count,
        name=name,
    )
    n = seed
    for well_path, images in wells.items():
        r, c = well_path.split("/")
        well = root.require_group(r).require_group(c)
        write_well_metadata(well, images, fmt=fmt)
        for img in images:
            n += 1
            write_field(well.require_group(img["path"]), field_data(n, side), levels, fmt, chunk)


@dataclass(frozen=True)
class PlateData:
    root: Path
    catalog: Path  # image catalog: one field of 2551 and one of 5005 as plain images
    plates: Path
    plate_fields: Path
    corrupt_root: Path  # a copy of 3001 whose levels 0 and 1 are corrupt


ROWS96 = list("ABCDEFGH")
COLS96 = [str(i) for i in range(1, 13)]


@pytest.fixture(scope="session")
def plate_data(tmp_path_factory: pytest.TempPathFactory) -> PlateData:
    base = tmp_path_factory.mktemp("plates")
    root = base / "root"
    two = [{"path": "0"}, {"path": "1"}]
    wells96: dict[str, list[dict[str, Any]]] = {f"{r}/{c}": two for r in "AB" for c in COLS96}
    wells96["H/12"] = [{"path": "0"}]
    wells96["C/3"] = []
    wells96["E/5"] = two
    write_plate(
        root / "screen" / f"{P96}.zarr",
        ROWS96,
        COLS96,
        wells96,
        fmt=FormatV04(),
        listed_only=("D/4",),
        name="plate-96",
    )
    broken = root / "screen" / f"{P96}.zarr" / "E" / "5" / "0" / ".zattrs"
    attrs = json.loads(broken.read_text())
    attrs["multiscales"][0]["datasets"].append({"path": "9", "coordinateTransformations": []})
    broken.write_text(json.dumps(attrs))

    rows384 = [chr(ord("A") + i) for i in range(16)]
    cols384 = [str(i) for i in range(1, 25)]
    wells384 = {
        f"{rows384[(i * 7) % 16]}/{cols384[(i * 5) % 24]}": [{"path": "0"}] for i in range(40)
    }
    write_plate(
        root / f"{P384}.zarr",
        rows384,
        cols384,
        wells384,
        fmt=FormatV04(),
        side=256,
        levels=3,
        chunk=64,
        name="plate-384",
        seed=1000,
    )
    write_plate(
        root / f"{P05}.zarr",
        ["A", "B"],
        ["1", "2", "3"],
        {
            f"{r}/{c}": [{"path": "0", "acquisition": 0}, {"path": "1", "acquisition": 1}]
            for r in "AB"
            for c in "123"
        },
        fmt=FormatV05(),
        acquisitions=[
            {"id": 0, "name": "day 1", "maximumfieldcount": 1, "starttime": 1700000000},
            {"id": 1, "name": "day 2", "maximumfieldcount": 1},
        ],
        name="plate-05",
        seed=2000,
    )
    edge_rows = [chr(ord("A") + i) for i in range(26)] + ["AA", "AB"]
    edge_cols = [str(i) for i in range(1, 102)]
    write_plate(
        root / f"{PEDGE}.zarr",
        edge_rows,
        edge_cols,
        {"AB/1": [{"path": "0"}], "A/101": [{"path": "0"}]},
        fmt=FormatV04(),
        seed=3000,
    )
    write_plate(
        base / "elsewhere" / "mapped.zarr",
        ["A", "B"],
        ["1", "2"],
        {"A/1": two, "B/2": [{"path": "0"}]},
        fmt=FormatV04(),
        name="mapped",
        seed=4000,
    )
    image7 = zarr.open_group(str(root / f"{PMAP}.zarr"), mode="w", zarr_format=2)
    write_field(image7, field_data(99, 64), 1, FormatV04(), 64)

    catalog = base / "catalog.csv"
    catalog.write_text(
        "id,path\n"
        f"50001,root/screen/{P96}.zarr/A/1/0\n"
        f"50002,root/screen/{P96}.zarr/B/12/1\n"
        f"50003,root/{P05}.zarr/B/3/1\n"
        f"50004,root/{P384}.zarr/{next(iter(wells384))}/0\n"
    )
    plates = base / "plates.csv"
    plates.write_text(f"plate_id,path\nplate:{PMAP},elsewhere/mapped.zarr\n")
    plate_fields = base / "plate_fields.csv"
    plate_fields.write_text(
        "image_id,plate_id,row,column,field\n"
        f"{MAPPED_BASE + 1},{PMAP},0,0,0\n"
        f"{MAPPED_BASE + 2},{PMAP},0,0,1\n"
        f"{MAPPED_BASE + 3},{PMAP},1,1,0\n"
        "not,a,row\n"
    )
    corrupt = base / "corrupt"
    shutil.copytree(root / f"{P384}.zarr", corrupt / f"{P384}.zarr")
    corrupted = 0
    for level in ("s0", "s1"):  # ome-zarr-py's level names
        for chunk in (corrupt / f"{P384}.zarr").glob(f"*/*/0/{level}/0/*/*"):
            chunk.write_bytes(b"not a chunk")
            corrupted += 1
    assert corrupted == 40 * (16 + 4)
    return PlateData(root, catalog, plates, plate_fields, corrupt)


def plate_settings(data: PlateData, **overrides: Any) -> dict[str, Any]:
    groups: dict[str, Any] = {
        "source": {
            "zarr_root": str(data.root),
            "catalog": str(data.catalog),
            "plates": str(data.plates),
            "plate_fields": str(data.plate_fields),
            "catalog_check_interval_s": 0,
        }
    }
    for key, value in overrides.items():
        group, _, name = key.partition("__")
        groups.setdefault(group, {})[name] = value
    return groups


@pytest.fixture
def plate_client(plate_data: PlateData, aiohttp_client: Callable[..., Any]) -> Callable[..., Any]:
    async def factory(**overrides: Any) -> TestClient:
        app = create_app(load_settings(plate_settings(plate_data, **overrides)))
        client: TestClient = await aiohttp_client(app)
        return client

    return factory
