"""The JSON of OMERO.web's plate endpoints, built from a parsed `Plate` (no I/O here).

`grid` is `/webgateway/plate/{id}/[{field}/[{acquisition}/]]` (OMERO.web's `plateGrid_json`,
its `PlateGrid.metadata`), `well_images` is `/webgateway/well/{id}/children/`
(`listWellImages_json`), and `field_meta` is what imgData says about a plate field. Every
field and where its value comes from: docs/plates.md#the-plate-grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from idrserve.sources.plate import (
    SAMPLE_BASE,
    WELL_BASE,
    Plate,
    Well,
    decode_scheme_id,
    fields_for,
    letter_label,
    scheme_image_id,
)

LAYOUTS = ("expand", "shrink", "trim")
DEFAULT_LAYOUT = "expand"  # OMERO.web's omero.web.plate_layout default


def well_id(plate: Plate, well: Well) -> int | None:
    found = scheme_image_id(plate.plate_id, well.row, well.column, 0, WELL_BASE)
    return None if found < 0 else found


def sample_id(plate: Plate, row: int, column: int, index: int) -> int | None:
    found = scheme_image_id(plate.plate_id, row, column, index, SAMPLE_BASE)
    return None if found < 0 else found


def decode_well_id(wid: int) -> tuple[int, int, int] | None:
    """(plate id, row, column) of a well id, or None."""
    found = decode_scheme_id(wid, WELL_BASE)
    if found is None or found[3] != 0:
        return None
    return found[0], found[1], found[2]


def field_name(plate: Plate, row: int, column: int, index: int) -> str:
    """The name OMERO gives an HCS field image: plate name, well and 1-based field."""
    return f"{plate.name} [Well {plate.well_label(row, column)}, Field {index + 1}]"


def _date(plate: Plate, acquisition: int | None) -> int:
    for acq in plate.acquisitions:
        if acq.id == acquisition and acq.starttime is not None:
            return acq.starttime
    return 0


def _label(names: tuple[str, ...], i: int, letters: bool) -> str | int:
    """A row or column label as OMERO.web writes it: ints for numbers, strings for letters."""
    if i < len(names):
        name = names[i]
        return int(name) if name.isdigit() else name
    return letter_label(i) if letters else i + 1


def _grid_size(plate: Plate, layout: str) -> tuple[int, int, int, int]:
    """(first row, first column, rows, columns) of the grid, as OMERO.web sizes it from the
    wells present: `trim` is up to the last well, `expand` grows that to 8×12 doubled until
    it fits, `shrink` also drops the rows and columns before the first well."""
    rows = max((w.row for w in plate.wells), default=-1) + 1
    cols = max((w.column for w in plate.wells), default=-1) + 1
    first_row = first_col = 0
    if layout == "expand":
        mul = 1
        while rows > 8 * mul or cols > 12 * mul:
            mul *= 2
        rows, cols = 8 * mul, 12 * mul
    elif layout == "shrink" and plate.wells:
        first_row = min(w.row for w in plate.wells)
        first_col = min(w.column for w in plate.wells)
    return first_row, first_col, rows, cols


def grid(
    plate: Plate,
    field: int,
    acquisition: int | None,
    layout: str,
    thumb_url: Callable[[int], str],
) -> tuple[dict[str, Any], int | None]:
    """The grid document without `image_sizes`, and the image id that names them (the first
    field found, as OMERO.web measures only the first image of its query)."""
    first_row, first_col, n_rows, n_cols = _grid_size(plate, layout)
    row_letters = not any(n.isdigit() for n in plate.rows)
    col_letters = not all(n.isdigit() for n in plate.columns)
    rowlabels = [_label(plate.rows, i, row_letters) for i in range(first_row, n_rows)]
    collabels = [_label(plate.columns, i, col_letters) for i in range(first_col, n_cols)]
    cells: list[list[dict[str, Any] | None]] = [[None] * len(collabels) for _ in rowlabels]
    first: int | None = None
    for well in plate.wells:
        chosen = fields_for(well, acquisition)
        if not 0 <= field < len(chosen):
            continue
        index = well.fields.index(chosen[field]) if well.fields is not None else field
        image_id = plate.image_ids.get((well.row, well.column, index))
        if image_id is None:
            continue
        first = image_id if first is None else first
        cells[well.row - first_row][well.column - first_col] = {
            "type": "Image",
            "id": image_id,
            "name": field_name(plate, well.row, well.column, index),
            "description": "",
            "author": "",
            "date": _date(plate, chosen[field].acquisition),
            "wellId": well_id(plate, well),
            "field": field,
            "thumb_url": thumb_url(image_id),
        }
    return {"grid": cells, "collabels": collabels, "rowlabels": rowlabels}, first


def well_images(
    plate: Plate, well: Well, acquisition: int | None, thumb_url: Callable[[int], str]
) -> list[dict[str, Any]]:
    """Every field of a well, as OMERO.web's `listWellImages_json` lists them."""
    out = []
    runs = {a.id: a.name for a in plate.acquisitions}
    for index, ref in enumerate(well.fields or ()):
        if acquisition is not None and ref.acquisition != acquisition:
            continue
        image_id = plate.image_ids.get((well.row, well.column, index))
        if image_id is None:
            continue
        name = field_name(plate, well.row, well.column, index)
        if ref.acquisition is not None and len(plate.acquisitions) > 1:
            name += f" [Run: {runs.get(ref.acquisition, ref.acquisition)}]"
        out.append(
            {
                "description": "",
                "author": "",
                "date": _date(plate, ref.acquisition),
                "thumb_url": thumb_url(image_id),
                "type": "Image",
                "id": image_id,
                "name": name,
            }
        )
    return out


def field_meta(plate: Plate, row: int, column: int, index: int) -> dict[str, Any]:
    """What imgData adds for a plate field: OMERO's `meta.wellId` (and `wellSampleId`, which
    OMERO.web leaves empty), the name, and the field's place in a `plate` object."""
    well = plate.well_at(row, column)
    assert well is not None
    assert well.fields is not None
    wid = well_id(plate, well)
    sid = sample_id(plate, row, column, index)
    return {
        "wellId": "" if wid is None else wid,
        "wellSampleId": "" if sid is None else sid,
        "imageName": field_name(plate, row, column, index),
        "plate": {
            "id": plate.plate_id,
            "name": plate.name,
            "well": plate.well_label(row, column),
            "wellId": wid,
            "row": row,
            "column": column,
            "rowName": plate.rows[row],
            "columnName": plate.columns[column],
            "field": index,
            "fieldPath": well.fields[index].path,
            "acquisition": well.fields[index].acquisition,
            "fieldCount": len(well.fields),
        },
    }
