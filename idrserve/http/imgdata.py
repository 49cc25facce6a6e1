"""OMERO.web's `imgData` JSON (webgateway `marshal.imageMarshal`), built from `ImageMeta`.

Keys and their order follow OMERO.web 5.26 (what IDR runs) plus the `resolutions` key of 5.31,
which older clients ignore. Facts OMERO knows but OME-Zarr does not (owner, project, dataset,
permissions) get the values OMERO.web gives the public user for an orphaned image.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from idrserve.model import ImageMeta
from idrserve.settings import ViewerSettings


def pixel_range(dtype: str) -> list[float] | list[int]:
    """Slider bounds from the pixel type, with web's int/float quirks kept."""
    if dtype == "bool":
        return [0, 1]
    dt = np.dtype(dtype)
    if dt.kind == "u":
        return [0, 2 ** (8 * dt.itemsize) - 1]
    if dt.kind == "i":
        bits = 8 * dt.itemsize
        # Python true division on web makes the signed bounds floats.
        return [-(2 ** (bits - 1)) / 1, (2 ** (bits - 1) - 1) / 1]
    if dt.itemsize <= 4:
        return [-2147483648.0, 2147483647.0]
    return [-9.223372036854776e18, 9.223372036854776e18]


def _split_grid(meta: ImageMeta, panels: int) -> dict[str, int]:
    root = math.sqrt(panels)
    gridy = round(root)
    gridx = gridy + 1 if root > gridy else gridy
    return {
        "width": meta.size_x * gridx + 2 * (gridx + 1),
        "height": meta.size_y * gridy + 2 * (gridy + 1),
        "border": 2,
        "gridx": gridx,
        "gridy": gridy,
    }


def image_data(meta: ImageMeta, viewer: ViewerSettings) -> dict[str, Any]:
    """The full imgData object for one image."""
    levels = meta.levels
    out: dict[str, Any] = {
        "id": meta.image_id,
        "meta": {
            "imageName": meta.name,
            "imageDescription": meta.description,
            "imageAuthor": "",
            "imageArchived": False,
            "projectName": "Multiple",
            "projectId": None,
            "projectDescription": "",
            "datasetName": "Multiple",
            "datasetId": None,
            "datasetDescription": "",
            "wellSampleId": "",
            "wellId": "",
            "imageTimestamp": 0.0,
            "imageId": meta.image_id,
            "pixelsType": meta.pixels_type,
        },
        "perms": {"canAnnotate": False, "canEdit": False, "canDelete": False, "canLink": False},
        "tiles": len(levels) > 1,
    }
    if len(levels) > 1:
        full = levels[0]
        out["tile_size"] = {"width": full.tile_x, "height": full.tile_y}
        out["levels"] = len(levels)
        out["resolutions"] = {
            str(i): {"sizeX": lv.size_x, "sizeY": lv.size_y} for i, lv in enumerate(levels)
        }
        out["zoomLevelScaling"] = {str(i): lv.size_x / full.size_x for i, lv in enumerate(levels)}
    init_zoom = viewer.init_zoom
    if init_zoom < 0:
        init_zoom = len(levels) + init_zoom
    out["interpolate"] = viewer.interpolate
    out["size"] = {
        "width": meta.size_x,
        "height": meta.size_y,
        "z": meta.size_z,
        "t": meta.size_t,
        "c": meta.size_c,
    }
    px, py, pz = meta.pixel_size
    out["pixel_size"] = {"x": px, "y": py, "z": pz}
    out["init_zoom"] = init_zoom
    out["pixel_range"] = pixel_range(meta.dtype)
    channels = []
    for ch in meta.channels:
        r, g, b, _a = ch.color
        entry: dict[str, Any] = {
            "emissionWave": ch.emission_wave,
            "label": ch.label,
            "color": f"{r:02X}{g:02X}{b:02X}",
        }
        if ch.lut:
            entry["lut"] = ch.lut
        entry.update(
            {
                "inverted": ch.inverted,
                "reverseIntensity": ch.inverted,
                "family": ch.family.value,
                "coefficient": float(ch.coefficient),
                "window": {
                    "min": float(ch.window_min),
                    "max": float(ch.window_max),
                    "start": float(ch.start),
                    "end": float(ch.end),
                },
                "active": ch.active,
            }
        )
        channels.append(entry)
    out["channels"] = channels
    out["split_channel"] = {
        "g": _split_grid(meta, meta.size_c),
        "c": _split_grid(meta, meta.size_c + 1),
    }
    out["rdefs"] = {
        "model": meta.default_model.value,
        "projection": "normal",
        "defaultZ": meta.default_z,
        "defaultT": meta.default_t,
        "invertAxis": False,
    }
    return out


def select_key(data: dict[str, Any], key: str) -> Any:
    """`imgData/<id>/<key>/`: a dot-separated path into the object; unknown → None (null)."""
    node: Any = data
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node
