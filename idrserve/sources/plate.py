"""OME-NGFF HCS plates: the plate and well metadata, and the ids their fields are served under.

A plate is a Zarr group `plate.zarr/` whose `plate` metadata lists rows, columns and wells;
each well group `ROW/COL/` lists its fields (`well.images`), and each field `ROW/COL/PATH/` is
an ordinary multiscale image. NGFF 0.4 (Zarr v2, `.zattrs`) and 0.5 (Zarr v3, `zarr.json`
`attributes.ome`) are read alike. Parsing is lenient where real data is (a missing
`rowIndex`, a missing `version`) and strict where a wrong answer would follow (a well path
that names no listed row or column is dropped and reported, never guessed).

Field image ids, when no explicit mapping names them (docs/plates.md#image-ids), follow one
deterministic scheme that stays below 2**53, so JavaScript clients keep them exact:

    image id = 8 * 10**15 + plate_id * 10**7 + row * 10**5 + column * 10**3 + field

with 0-based row, column and field indexes, plate ids below 10**8, rows and columns below 100
and fields below 1000. Wells get `7 * 10**15 + …` (field 0) and well samples
`6 * 10**15 + …` in the same layout. Anything outside those bounds has no scheme id and needs
the mapping file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from idrserve.catalog import Location
from idrserve.sources.ngff import ngff_attrs

FIELD_BASE = 8 * 10**15
WELL_BASE = 7 * 10**15
SAMPLE_BASE = 6 * 10**15
MAX_PLATE_ID = 10**8 - 1
MAX_INDEX = 99  # rows and columns
MAX_FIELD = 999
# Bounds on what a plate's metadata may claim, so a hostile document cannot cost much.
MAX_ROWS = 1000
MAX_COLUMNS = 1000
MAX_WELLS = 100_000
MAX_FIELDS_PER_WELL = 10_000


class PlateError(ValueError):
    """Plate or well metadata that cannot be used; the message says why (no paths)."""


@dataclass(frozen=True, slots=True)
class FieldRef:
    """One field of a well: its group name and acquisition (None when not given)."""

    path: str
    acquisition: int | None


@dataclass(frozen=True, slots=True)
class Well:
    """A well the plate lists. `fields` is None when the well group could not be read (it is
    then shown as present but with no images); `problem` says why."""

    row: int
    column: int
    path: str
    fields: tuple[FieldRef, ...] | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Acquisition:
    id: int
    name: str
    description: str
    starttime: int | None
    maximumfieldcount: int | None


@dataclass(slots=True)
class Plate:
    """A parsed plate: its location, naming, wells and the field image ids."""

    plate_id: int
    location: Location
    zarr_format: int
    version: str
    name: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    wells: tuple[Well, ...]
    acquisitions: tuple[Acquisition, ...]
    field_count: int
    # The raw plate attributes as stored, for the HCS store view (`/zarr/plates/…`).
    attrs: Mapping[str, Any] = field(default_factory=dict)
    # (row, column, field index) -> image id; filled from the mapping or the scheme.
    image_ids: dict[tuple[int, int, int], int] = field(default_factory=dict)
    explicit_ids: bool = False
    problems: list[str] = field(default_factory=list)
    # Unique per load in this process: what caches built from this plate are keyed on.
    serial: int = 0

    def well_at(self, row: int, column: int) -> Well | None:
        for w in self.wells:
            if w.row == row and w.column == column:
                return w
        return None

    def field_path(self, row: int, column: int, index: int) -> str | None:
        """`ROW/COL/FIELD` of a field by its indexes, or None when there is no such field."""
        well = self.well_at(row, column)
        if well is None or well.fields is None or not 0 <= index < len(well.fields):
            return None
        return f"{well.path}/{well.fields[index].path}"

    def well_label(self, row: int, column: int) -> str:
        return f"{self.rows[row]}{self.columns[column]}"


def scheme_image_id(
    plate_id: int, row: int, column: int, index: int, base: int = FIELD_BASE
) -> int:
    """The scheme's id (see the module docstring), or -1 when an index is out of its bounds."""
    if not (
        0 <= plate_id <= MAX_PLATE_ID
        and 0 <= row <= MAX_INDEX
        and 0 <= column <= MAX_INDEX
        and 0 <= index <= MAX_FIELD
    ):
        return -1
    return base + plate_id * 10**7 + row * 10**5 + column * 10**3 + index


def decode_scheme_id(image_id: int, base: int = FIELD_BASE) -> tuple[int, int, int, int] | None:
    """(plate id, row, column, field) of a scheme id, or None when `image_id` is not one."""
    rest = image_id - base
    if not 0 <= rest < 10**15:
        return None
    plate_id, rest = divmod(rest, 10**7)
    row, rest = divmod(rest, 10**5)
    column, index = divmod(rest, 10**3)
    if row > MAX_INDEX or column > MAX_INDEX:
        return None
    return plate_id, row, column, index


def letter_label(i: int) -> str:
    """OMERO's letter labels: 0 → A, 25 → Z, 26 → AA, 100 → CW."""
    out = chr(ord("A") + i % 26)
    i //= 26
    while i > 0:
        i -= 1
        out = chr(ord("A") + i % 26) + out
        i //= 26
    return out


def _names(attrs: Mapping[str, Any], key: str, limit: int) -> tuple[str, ...]:
    items = attrs.get(key)
    if not isinstance(items, list):
        raise PlateError(f"plate.{key} is not a list")
    if len(items) > limit:
        raise PlateError(f"plate.{key} lists {len(items)} entries, more than {limit}")
    names = []
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or not name or "/" in name or len(name) > 64:
            raise PlateError(f"plate.{key}[{i}] has no usable name")
        names.append(name)
    if len(set(names)) != len(names):
        raise PlateError(f"plate.{key} repeats a name")
    return tuple(names)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_plate(
    plate_id: int, location: Location, ngff: Mapping[str, Any], zarr_format: int
) -> tuple[Plate, list[str]]:
    """The plate from its group's NGFF attributes, and the well paths to read next.

    Wells are placed by their `path` (`ROW/COL`, names from `rows` and `columns`); indexes that
    disagree with the path are reported, and the path wins, as ome-zarr-py does.
    """
    attrs = ngff.get("plate")
    if not isinstance(attrs, Mapping):
        raise PlateError("no plate metadata")
    rows = _names(attrs, "rows", MAX_ROWS)
    columns = _names(attrs, "columns", MAX_COLUMNS)
    wells_raw = attrs.get("wells")
    if not isinstance(wells_raw, list):
        raise PlateError("plate.wells is not a list")
    if len(wells_raw) > MAX_WELLS:
        raise PlateError(f"plate.wells lists {len(wells_raw)} wells, more than {MAX_WELLS}")
    row_of = {name: i for i, name in enumerate(rows)}
    col_of = {name: i for i, name in enumerate(columns)}
    problems: list[str] = []
    seen: set[tuple[int, int]] = set()
    placed: list[tuple[int, int, str]] = []
    for i, w in enumerate(wells_raw):
        raw_path = w.get("path") if isinstance(w, Mapping) else None
        path = raw_path if isinstance(raw_path, str) else ""
        parts = path.split("/")
        if len(parts) != 2 or parts[0] not in row_of or parts[1] not in col_of:
            problems.append(f"plate.wells[{i}]: path names no listed row and column")
            continue
        r, c = row_of[parts[0]], col_of[parts[1]]
        ri, ci = _int(w.get("rowIndex")), _int(w.get("columnIndex"))
        if (ri is not None and ri != r) or (ci is not None and ci != c):
            problems.append(f"plate.wells[{i}]: indexes disagree with path {path}; path used")
        if (r, c) in seen:
            problems.append(f"plate.wells[{i}]: well {path} listed twice")
            continue
        seen.add((r, c))
        placed.append((r, c, path))
    acquisitions = []
    for a in attrs.get("acquisitions") or []:
        if isinstance(a, Mapping) and _int(a.get("id")) is not None:
            acquisitions.append(
                Acquisition(
                    int(a["id"]),
                    str(a.get("name") or ""),
                    str(a.get("description") or ""),
                    _int(a.get("starttime")),
                    _int(a.get("maximumfieldcount")),
                )
            )
    version = attrs.get("version") or ngff.get("version") or ("0.5" if zarr_format == 3 else "0.4")
    name = attrs.get("name")
    plate = Plate(
        plate_id=plate_id,
        location=location,
        zarr_format=zarr_format,
        version=str(version),
        name=name if isinstance(name, str) and name else str(plate_id),
        rows=rows,
        columns=columns,
        wells=tuple(Well(r, c, p, None, "not read yet") for r, c, p in sorted(placed)),
        acquisitions=tuple(acquisitions),
        field_count=_int(attrs.get("field_count")) or 0,
        attrs=attrs,
        problems=problems,
    )
    return plate, [w.path for w in plate.wells]


def parse_well(ngff: Mapping[str, Any]) -> tuple[FieldRef, ...]:
    """A well group's fields, in stored order; a well with no images has none."""
    attrs = ngff.get("well")
    if not isinstance(attrs, Mapping):
        raise PlateError("no well metadata")
    images = attrs.get("images")
    if not isinstance(images, list):
        raise PlateError("well.images is not a list")
    if len(images) > MAX_FIELDS_PER_WELL:
        raise PlateError(f"well.images lists more than {MAX_FIELDS_PER_WELL} fields")
    out = []
    paths: set[str] = set()
    for i, img in enumerate(images):
        path = img.get("path") if isinstance(img, Mapping) else None
        if not isinstance(path, str) or not path.isalnum() or path in paths:
            raise PlateError(f"well.images[{i}] has no usable path")
        paths.add(path)
        out.append(FieldRef(path, _int(img.get("acquisition"))))
    return tuple(out)


def group_attrs(raw: bytes, zarr_format: int) -> Mapping[str, Any]:
    """The NGFF attributes of a group document (`.zattrs`, or `zarr.json`'s `attributes.ome`)."""
    doc = json.loads(raw)
    if not isinstance(doc, Mapping):
        raise PlateError("group metadata is not a JSON object")
    return ngff_attrs(doc, zarr_format)


def fields_for(well: Well, acquisition: int | None) -> Sequence[FieldRef]:
    """The well's fields, only those of `acquisition` when one is given (OMERO.web's `run`)."""
    if well.fields is None:
        return ()
    if acquisition is None:
        return well.fields
    return [f for f in well.fields if f.acquisition == acquisition]
