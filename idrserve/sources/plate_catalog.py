"""`PlateCatalog`: where each plate lives, and which field of which plate an image id names.

Plates are found, in this order (docs/plates.md):

1. `source.plates`, a CSV file of `plate_id,path` rows (`plate:2551,idr0001A/2551.zarr` is
   accepted too); relative paths resolve against the file's directory;
2. the image catalog and `zarr_root` scan: `<plate id>.zarr` found there is a plate when its
   group holds `plate` metadata (IDR's layout names plates by their OMERO plate id).

Field image ids come from `source.plate_fields` (`image_id,plate_id,row,column,field`, 0-based
indexes as OMERO exports them) for every plate that file names, else from the deterministic
scheme of `sources/plate.py`. The catalog is also the `Locator` the pixel sources use, so a
field is read, rendered and cached exactly as any image: its location is the plate's location
joined with `ROW/COL/FIELD`.

Parsed plates (one root document and one document per well) are kept in a bounded LRU for
`source.rescan_interval_s`; concurrent first requests for a plate share one load.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from idrserve import errors
from idrserve.catalog import Location, Locator, is_url
from idrserve.flight import SingleFlight
from idrserve.lru import BoundedLRU
from idrserve.settings import SourceSettings
from idrserve.sources.plate import (
    Plate,
    PlateError,
    Well,
    decode_scheme_id,
    group_attrs,
    parse_plate,
    parse_well,
    scheme_image_id,
)
from idrserve.sources.zarr import _get as get_key
from idrserve.sources.zarr import _open_store as open_store

log = logging.getLogger("idrserve.plates")

MAX_PLATES_CACHED = 256
_SERIALS = itertools.count(1)
WELL_READS_IN_FLIGHT = 32


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """What an image id is when it is a plate field."""

    plate: Plate
    row: int
    column: int
    index: int

    @property
    def path(self) -> str:
        found = self.plate.field_path(self.row, self.column, self.index)
        assert found is not None
        return found


def join(location: Location, path: str) -> Location:
    if isinstance(location, Path):
        return location / path
    return f"{location.rstrip('/')}/{path}"


def _resolve(base: Path, value: str) -> Location:
    if is_url(value):
        return value
    if value.startswith("file://"):
        return Path(value[len("file://") :])
    path = Path(value)
    return path if path.is_absolute() else base / path


def read_plates_file(path: Path) -> dict[int, Location]:
    """`plate_id,path` rows (a header line naming the columns first); bad rows are skipped
    with a warning, as in the image catalog."""
    out: dict[int, Location] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if n == 1 or len(row) < 2 or not row[0].strip():
                continue
            ident = row[0].strip().removeprefix("plate:")
            if not ident.isdigit() or not row[1].strip():
                log.warning("plates %s line %d: not `plate_id,path`; skipped", path, n)
                continue
            out[int(ident)] = _resolve(path.parent, row[1].strip())
    return out


class FieldMap:
    """The explicit `image_id,plate_id,row,column,field` rows, as sorted numpy columns
    (about 26 bytes a field: ten million fields take 260 MB)."""

    def __init__(self, rows: np.ndarray) -> None:
        order = np.argsort(rows[:, 0], kind="stable")
        self.rows = rows[order]
        self.by_plate = np.argsort(self.rows[:, 1], kind="stable")
        self.plates_sorted = self.rows[self.by_plate, 1]

    @classmethod
    def read(cls, path: Path) -> FieldMap:
        values: list[tuple[int, int, int, int, int]] = []
        with path.open(newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.reader(f), start=1):
                if n == 1 or not row:
                    continue
                try:
                    image_id, plate_id, r, c, fld = (int(v) for v in row[:5])
                except ValueError:
                    log.warning("plate fields %s line %d: not five integers; skipped", path, n)
                    continue
                if min(image_id, plate_id, r, c, fld) < 0:
                    log.warning("plate fields %s line %d: negative value; skipped", path, n)
                    continue
                values.append((image_id, plate_id, r, c, fld))
        return cls(np.array(values, dtype=np.int64).reshape(-1, 5))

    def lookup(self, image_id: int) -> tuple[int, int, int, int] | None:
        ids = self.rows[:, 0]
        i = int(np.searchsorted(ids, image_id))
        if i < len(ids) and ids[i] == image_id:
            _, p, r, c, f = (int(v) for v in self.rows[i])
            return p, r, c, f
        return None

    def for_plate(self, plate_id: int) -> dict[tuple[int, int, int], int]:
        lo = int(np.searchsorted(self.plates_sorted, plate_id, side="left"))
        hi = int(np.searchsorted(self.plates_sorted, plate_id, side="right"))
        rows = self.rows[self.by_plate[lo:hi]]
        return {(int(r[2]), int(r[3]), int(r[4])): int(r[0]) for r in rows}


class PlateCatalog:
    """Plates by id, and the `Locator` of every image (plate fields first, then the catalog)."""

    def __init__(self, settings: SourceSettings, images: Locator) -> None:
        self._settings = settings
        self._images = images
        self._plates: BoundedLRU[int, Plate] = BoundedLRU(
            MAX_PLATES_CACHED, ttl_s=settings.rescan_interval_s
        )
        self._loading: SingleFlight[int, Plate] = SingleFlight("plate", cancel_abandoned=False)
        self._files: tuple[dict[int, Location], FieldMap | None] | None = None
        self._files_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._loading.aclose()

    # ---- the files ------------------------------------------------------------------------

    async def _read_files(self) -> tuple[dict[int, Location], FieldMap | None]:
        if self._files is not None:
            return self._files
        async with self._files_lock:
            if self._files is None:
                s = self._settings
                plates = await asyncio.to_thread(read_plates_file, s.plates) if s.plates else {}
                fields = (
                    await asyncio.to_thread(FieldMap.read, s.plate_fields)
                    if (s.plate_fields)
                    else None
                )
                self._files = (plates, fields)
                log.info(
                    "plates: %d listed, %d fields mapped",
                    len(plates),
                    0 if fields is None else len(fields.rows),
                )
        return self._files

    # ---- plates ---------------------------------------------------------------------------

    async def plate(self, plate_id: int) -> Plate:
        """The parsed plate; `errors.NotFound` when no plate has this id."""
        found = self._plates.get(plate_id)
        if found is not None:
            return found
        plate, _ = await self._loading.run(plate_id, lambda: self._load(plate_id))
        return plate

    async def _load(self, plate_id: int) -> Plate:
        listed, fields = await self._read_files()
        location = listed.get(plate_id)
        if location is None:
            location = await self._images.locate(plate_id)
        missing = errors.NotFound(f"plate {plate_id} not found", param="plate_id")
        if location is None:
            raise missing
        started = time.perf_counter()
        store = open_store(location, self._settings)
        try:
            v3, v2 = await asyncio.gather(get_key(store, "zarr.json"), get_key(store, ".zattrs"))
        except (FileNotFoundError, NotADirectoryError):
            raise missing from None
        fmt, raw = (3, v3) if v3 is not None else (2, v2)
        if raw is None:
            raise missing
        try:
            plate, _ = parse_plate(plate_id, location, group_attrs(raw, fmt), fmt)
        except (PlateError, ValueError) as exc:
            # An image (or anything else) at this id is not a plate: a 404, reason in the log.
            missing.internal = f"{location}: {exc}"
            raise missing from None
        sem = asyncio.Semaphore(WELL_READS_IN_FLIGHT)
        key = "zarr.json" if fmt == 3 else ".zattrs"

        async def read_well(well: Well) -> Well:
            async with sem:
                try:
                    doc = await get_key(store, f"{well.path}/{key}")
                    if doc is None:
                        return replace(well, problem="the well group has no metadata")
                    return replace(well, fields=parse_well(group_attrs(doc, fmt)), problem=None)
                except (PlateError, ValueError, OSError) as exc:
                    return replace(well, problem=str(exc)[:200])

        wells = await asyncio.gather(*(read_well(w) for w in plate.wells))
        plate.wells = tuple(wells)
        plate.serial = next(_SERIALS)
        plate.problems.extend(f"well {w.path}: {w.problem}" for w in wells if w.problem)
        if fields is not None:
            mapped = fields.for_plate(plate_id)
            if mapped:
                plate.image_ids = mapped
                plate.explicit_ids = True
        if not plate.explicit_ids:
            plate.image_ids = _scheme_ids(plate)
        log.info(
            "plate %d: %d wells, %d fields in %.3f s (%d problems)",
            plate_id,
            len(wells),
            len(plate.image_ids),
            time.perf_counter() - started,
            len(plate.problems),
        )
        self._plates.put(plate_id, plate)
        return plate

    # ---- fields ---------------------------------------------------------------------------

    async def field(self, image_id: int) -> FieldInfo | None:
        """The plate field `image_id` names, or None when it is no plate field."""
        _, fields = await self._read_files()
        where = fields.lookup(image_id) if fields is not None else None
        if where is None:
            where = decode_scheme_id(image_id)
        if where is None:
            return None
        plate_id, row, column, index = where
        try:
            plate = await self.plate(plate_id)
        except errors.NotFound:
            return None
        if plate.image_ids.get((row, column, index)) != image_id:
            return None  # a scheme id of a plate whose ids are mapped, or a stale mapping
        if plate.field_path(row, column, index) is None:
            return None
        return FieldInfo(plate, row, column, index)

    async def locate(self, image_id: int) -> Location | None:
        info = await self.field(image_id)
        if info is not None:
            return join(info.plate.location, info.path)
        return await self._images.locate(image_id)


def _scheme_ids(plate: Plate) -> dict[tuple[int, int, int], int]:
    out = {}
    for w in plate.wells:
        for i in range(len(w.fields or ())):
            image_id = scheme_image_id(plate.plate_id, w.row, w.column, i)
            if image_id >= 0:
                out[(w.row, w.column, i)] = image_id
    return out


def plate_summary(plate: Plate) -> dict[str, Any]:
    """Counts for logs and `/api/v1/plates/{id}`."""
    return {
        "wells": len(plate.wells),
        "fields": len(plate.image_ids),
        "problems": len(plate.problems),
    }
