"""OME-NGFF 0.4 / 0.5 metadata documents (Zarr v2 and v3) describing an image's store view.

Pure functions from `ImageMeta` (and the view's axes, shapes and chunks) to JSON bytes, so the
documents are the same whichever source the image comes from.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from idrserve.model import ImageMeta

_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_SHUFFLES = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}
# Zarr v3 codecs of the core specification and zarr-python's registered extensions, which
# zarr-python, tensorstore and zarrita.js all read: stored arrays using only these are served
# as they are.
V3_CODECS = frozenset({"bytes", "transpose", "blosc", "gzip", "zstd", "crc32c", "sharding_indexed"})


def level0_shape(meta: ImageMeta, axes: tuple[str, ...]) -> tuple[int, ...]:
    sizes = {
        "t": meta.size_t,
        "c": meta.size_c,
        "z": meta.size_z,
        "y": meta.size_y,
        "x": meta.size_x,
    }
    return tuple(sizes[a] for a in axes)


def level_scale(
    meta: ImageMeta, axes: tuple[str, ...], shape: tuple[int, ...], level0: tuple[int, ...]
) -> tuple[float, ...]:
    """NGFF scale per axis: the physical pixel size (1 when unknown) times the downsampling."""
    px, py, pz = meta.pixel_size
    physical = {"x": px, "y": py, "z": pz}
    out = []
    for role, n, n0 in zip(axes, shape, level0, strict=True):
        base = physical.get(role) or 1.0
        out.append(float(base * (n0 / n)) if role in "zyx" and n else float(base))
    return tuple(out)


def v3_array_doc(
    v2: dict[str, Any], dtype: np.dtype[Any], axes: tuple[str, ...], sep: str, *, v2_keys: bool
) -> bytes:
    """A Zarr v3 array document describing the same chunk bytes as a v2 one."""
    codecs: list[dict[str, Any]] = [{"name": "bytes"}]
    if dtype.itemsize > 1:
        codecs[0]["configuration"] = {"endian": "big" if dtype.byteorder == ">" else "little"}
    comp = v2.get("compressor")
    if comp:
        cfg = {k: v for k, v in comp.items() if k != "id"}
        if comp["id"] == "blosc":
            shuffle = int(cfg.get("shuffle", 1))
            cfg = {
                "cname": cfg.get("cname", "lz4"),
                "clevel": int(cfg.get("clevel", 5)),
                "shuffle": _SHUFFLES.get(shuffle, "shuffle"),
                "typesize": dtype.itemsize,
                "blocksize": int(cfg.get("blocksize", 0)),
            }
        elif comp["id"] == "zstd":
            cfg = {"level": int(cfg.get("level", 0)), "checksum": bool(cfg.get("checksum", False))}
        codecs.append({"name": comp["id"], "configuration": cfg})
    fill = v2.get("fill_value")
    encoding: dict[str, Any] = (
        {"name": "v2", "configuration": {"separator": sep}}
        if v2_keys
        else {"name": "default", "configuration": {"separator": "/"}}
    )
    doc = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(v2["shape"]),
        "data_type": dtype.newbyteorder("=").name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(v2["chunks"])}},
        "chunk_key_encoding": encoding,
        "fill_value": 0 if fill is None else fill,
        "codecs": codecs,
        "attributes": {},
        "dimension_names": list(axes),
    }
    return dumps(doc)


def axes_doc(
    meta: ImageMeta, axes: tuple[str, ...], source_axes: tuple[str, ...] | None = None
) -> list[dict[str, Any]]:
    """NGFF `axes` of a view whose source has `source_axes` (None: all of `axes`).

    NGFF names units for space and time axes only, none for channels; idrserve knows physical
    sizes in micrometres (sources/ngff.py converts every length unit) and no time increments,
    so only space axes get a unit. One the source has gets it when its size is known; one the
    view adds to make it 5D (a single plane) gets it when any of the source's space axes has
    one, so the space axes agree.
    """
    px, py, pz = meta.pixel_size
    physical = {"x": px, "y": py, "z": pz}
    kept = axes if source_axes is None else source_axes
    any_known = any(physical.get(role) for role in kept)
    out = []
    for role in axes:
        axis: dict[str, Any] = {"name": role, "type": _AXIS_TYPES[role]}
        added = role not in kept
        if role in physical and (physical[role] or (added and any_known)):
            axis["unit"] = "micrometer"
        out.append(axis)
    return out


def stored_v3_doc(
    raw: bytes, shape: tuple[int, ...], axes: tuple[str, ...]
) -> tuple[dict[str, Any], bytes] | None:
    """A stored Zarr v3 array document any reader can use as it is: the parsed document and the
    bytes to serve (the stored ones, with `dimension_names` set to `axes` when they differ, as
    NGFF 0.5 requires them to match the axes); None when it is not one."""
    try:
        doc = json.loads(raw)
        grid = doc["chunk_grid"]
        encoding = doc["chunk_key_encoding"]
        ok = (
            doc.get("zarr_format") == 3
            and doc.get("node_type") == "array"
            and tuple(doc.get("shape", ())) == shape
            and isinstance(doc.get("data_type"), str)
            and np.dtype(doc["data_type"]).kind in "biuf"
            and grid.get("name") == "regular"
            and len(grid["configuration"]["chunk_shape"]) == len(shape)
            and encoding.get("name") in ("default", "v2")
            and chunk_separator(encoding) in ("/", ".")
            and not doc.get("storage_transformers")
            and _known_codecs(doc.get("codecs"))
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not ok:
        return None
    if doc.get("dimension_names") == list(axes):
        return doc, raw
    return doc, dumps(doc | {"dimension_names": list(axes)})


def chunk_separator(encoding: dict[str, Any]) -> Any:
    """The separator of a v3 `chunk_key_encoding` (its default when not given)."""
    default = "/" if encoding.get("name") == "default" else "."
    return (encoding.get("configuration") or {}).get("separator", default)


def _known_codecs(codecs: Any) -> bool:
    if not isinstance(codecs, list) or not codecs:
        return False
    for codec in codecs:
        if not isinstance(codec, dict) or codec.get("name") not in V3_CODECS:
            return False
        if codec["name"] == "sharding_indexed":
            config = codec.get("configuration") or {}
            inner = (config.get("codecs"), config.get("index_codecs"))
            if not all(_known_codecs(c) for c in inner):
                return False
    return True


def group_docs(
    meta: ImageMeta,
    axes: tuple[str, ...],
    scales: list[tuple[float, ...]],
    zarr_format: int,
    source_axes: tuple[str, ...] | None = None,
) -> dict[str, bytes]:
    """`.zgroup` + `.zattrs` (NGFF 0.4) or `zarr.json` (NGFF 0.5) of the image group."""
    multiscale: dict[str, Any] = {
        "name": meta.name,
        "axes": axes_doc(meta, axes, source_axes),
        "datasets": [
            {
                "path": str(i),
                "coordinateTransformations": [{"type": "scale", "scale": list(scale)}],
            }
            for i, scale in enumerate(scales)
        ],
        "metadata": {"description": meta.description},
    }
    if zarr_format == 2:
        omero = omero_block(meta, "0.4")
        attrs = {"multiscales": [{"version": "0.4", **multiscale}], "omero": omero}
        return {".zgroup": dumps({"zarr_format": 2}), ".zattrs": dumps(attrs)}
    # NGFF 0.5: "The OME-Zarr Metadata version MUST be consistent within a hierarchy."
    ome = {"version": "0.5", "multiscales": [multiscale], "omero": omero_block(meta, "0.5")}
    group = {"zarr_format": 3, "node_type": "group", "attributes": {"ome": ome}}
    return {"zarr.json": dumps(group)}


def omero_block(meta: ImageMeta, version: str = "0.4") -> dict[str, Any]:
    """The `omero` block with the image's resolved default rendering settings, for a document
    of NGFF `version`."""
    channels = []
    for ch in meta.channels:
        r, g, b, _ = ch.color
        channels.append(
            {
                "label": ch.label,
                "color": f"{r:02X}{g:02X}{b:02X}",
                "active": ch.active,
                "family": ch.family.value,
                "coefficient": _finite(ch.coefficient),
                "inverted": ch.inverted,
                "window": {
                    "min": _finite(ch.window_min),
                    "max": _finite(ch.window_max),
                    "start": _finite(ch.start),
                    "end": _finite(ch.end),
                },
            }
        )
    return {
        "id": meta.image_id,
        "name": meta.name,
        "version": version,
        "channels": channels,
        "rdefs": {
            "defaultZ": meta.default_z,
            "defaultT": meta.default_t,
            "model": meta.default_model.value,
        },
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, allow_nan=False).encode()
