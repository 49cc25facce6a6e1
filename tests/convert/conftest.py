"""TIFF files of every flavour `idrserve convert` reads, written by tifffile in the test, and
helpers that read them back the independent way (tifffile's own `asarray`)."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

RNG_SEED = 17


def pattern(shape: Sequence[int], dtype: str, seed: int = RNG_SEED) -> np.ndarray:
    """Smooth structure plus noise in the dtype's range, so every offset error shows."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    h, w = shape[-2], shape[-1]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.25 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    lead = int(np.prod(shape[:-2], dtype=np.int64))
    planes = [base * (1 + 0.1 * k) + rng.normal(0, 0.05, (h, w)) for k in range(lead)]
    data = np.stack(planes).reshape(shape)
    if dt.kind == "f":
        return (data * 1000 - 300).astype(dt)
    info = np.iinfo(dt)
    scaled = info.min + np.clip(data, 0, 1) * (float(info.max) - float(info.min))
    return scaled.astype(dt)


def write_ome_subifds(path: Path, data: np.ndarray, levels: int = 3, **kw: Any) -> None:
    """An OME-TIFF pyramid: full resolution as pages, reductions (by 2) as SubIFDs."""
    metadata = {
        "axes": "CZYX",
        "Channel": {"Name": ["DAPI", "GFP"], "Color": [0x0000FFFF, 0x00FF00FF]},
        "PhysicalSizeX": 0.325,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": 0.325,
        "PhysicalSizeYUnit": "µm",
        "PhysicalSizeZ": 1.5,
        "PhysicalSizeZUnit": "µm",
        "Name": "cells",
    }
    opts: dict[str, Any] = {"tile": (128, 128), "compression": "zlib"} | kw
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(data, subifds=levels - 1, metadata=metadata, **opts)
        for k in range(1, levels):
            tw.write(data[..., :: 2**k, :: 2**k], subfiletype=1, **opts)


def write_ome_5d(path: Path, data: np.ndarray, **kw: Any) -> None:
    """A 5-D OME-TIFF, one page per plane (TZCYX), with a time increment in seconds."""
    metadata = {
        "axes": "TCZYX",
        "Channel": {"Name": ["Moving", "Still"]},
        "PhysicalSizeX": 0.5,
        "PhysicalSizeY": 0.5,
        "PhysicalSizeZ": 2.0,
        "PhysicalSizeZUnit": "µm",
        "TimeIncrement": 30.0,
        "TimeIncrementUnit": "s",
    }
    tifffile.imwrite(path, data, ome=True, metadata=metadata, **kw)


def write_svs_like(path: Path, base: np.ndarray, mpp: float = 0.499) -> None:
    """An Aperio-like file: JPEG RGB tiles, a thumbnail page, levels by 4, label and macro."""
    h, w = base.shape[:2]
    head = "Aperio Image Library v10.0.51\r\n"
    tail = f"|AppMag = 20|MPP = {mpp}"
    kw: dict[str, Any] = {"photometric": "rgb", "metadata": None}
    jpeg: dict[str, Any] = {"compression": "jpeg", "subsampling": (1, 1)}
    with tifffile.TiffWriter(path) as tw:
        desc = f"{head}{w}x{h} [0,100 {w}x{h}] (256x256) JPEG/RGB Q=70{tail}"
        tw.write(base, tile=(256, 256), description=desc, **jpeg, **kw)
        thumb = base[::16, ::16]
        tw.write(thumb, description=f"{head}{w}x{h} -> thumbnail{tail}", **jpeg, **kw)
        for k in (4, 16):
            lv = base[::k, ::k]
            desc = f"{head}{w}x{h} -> {lv.shape[1]}x{lv.shape[0]} - {tail}"
            tw.write(lv, tile=(256, 256), description=desc, **jpeg, **kw)
        label = f"{head}label 200x100"
        tw.write(base[:100, :200], description=label, subfiletype=1, compression="lzw", **kw)
        macro = f"{head}macro 300x150"
        tw.write(base[:150, :300], description=macro, subfiletype=9, **jpeg, **kw)


def write_multifile_ome(directory: Path, data: np.ndarray, drop: int | None = None) -> Path:
    """A multi-file OME-TIFF set: channel c of (C, Y, X) data in `multi_c{c}.ome.tif`, every
    file carrying the whole OME-XML; `drop` leaves one file out. Returns the first file."""
    size_c, h, w = data.shape
    names = [f"multi_c{c}.ome.tif" for c in range(size_c)]
    uuids = [f"urn:uuid:{uuid.uuid4()}" for _ in names]
    tiffdata = "".join(
        f'<TiffData FirstC="{c}" IFD="0" PlaneCount="1">'
        f'<UUID FileName="{name}">{uid}</UUID></TiffData>'
        for c, (name, uid) in enumerate(zip(names, uuids, strict=True))
    )
    channels = "".join(
        f'<Channel ID="Channel:0:{c}" Name="ch{c}" SamplesPerPixel="1"/>' for c in range(size_c)
    )
    for c, (name, uid) in enumerate(zip(names, uuids, strict=True)):
        if c == drop:
            continue
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"'
            f' UUID="{uid}"><Image ID="Image:0" Name="multi">'
            f'<Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="{data.dtype.name}"'
            f' SizeX="{w}" SizeY="{h}" SizeC="{size_c}" SizeZ="1" SizeT="1"'
            ' PhysicalSizeX="0.1" PhysicalSizeXUnit="nm" PhysicalSizeY="0.1"'
            f' PhysicalSizeYUnit="nm">{channels}{tiffdata}</Pixels></Image></OME>'
        )
        tifffile.imwrite(
            directory / name,
            data[c],
            description=xml,
            metadata=None,
            tile=(64, 64),
            compression="zlib",
        )
    return directory / names[0]


def write_generic_pyramid(path: Path, data: np.ndarray, *, pages: bool = False, **kw: Any) -> None:
    """A plain tiled TIFF (no OME-XML) with reductions by 2: SubIFDs, or with `pages` the
    reductions as further top-level pages (marked reduced), as iipsrv reads them."""
    opts: dict[str, Any] = {"tile": (64, 64), "compression": "zlib", "metadata": None}
    res: dict[str, Any] = {"resolution": (1e4 / 0.25, 1e4 / 0.25), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, **kw) as tw:
        tw.write(data, subifds=None if pages else 2, **opts, **res)
        for k in (2, 4):
            tw.write(data[::k, ::k], subfiletype=1, **opts)


def patch_compression(path: Path, code: int) -> None:
    """Rewrite the first page's Compression tag in place (an unknown codec)."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["Compression"]
        offset, order = tag.valueoffset, tif.byteorder
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 2] = struct.pack(f"{order}H", code)
    path.write_bytes(bytes(raw))


# ---- the independent read ------------------------------------------------------------------

_ROLE = {"T": "t", "C": "c", "S": "s", "Z": "z", "Y": "y", "X": "x"}


def as_output(data: np.ndarray, axes: str, out_axes: str) -> np.ndarray:
    """tifffile's array (its `axes`) arranged as the converter's output (`out_axes`):
    t, c (channels, then samples within each), z, y, x."""
    roles = []
    for axis, n in zip(axes, data.shape, strict=True):
        role = _ROLE.get(axis)
        if role is None:
            role = "z" if n > 1 else "drop"
        roles.append(role)
    keep = [i for i, r in enumerate(roles) if r != "drop"]
    data = data.reshape([data.shape[i] for i in keep])
    roles = [roles[i] for i in keep]
    for role in "tcszyx":
        if role not in roles:
            data = data[np.newaxis]
            roles.insert(0, role)
    data = np.moveaxis(data, [roles.index(r) for r in "tcszyx"], range(6))
    t, c, s, z, y, x = data.shape
    data = data.reshape(t, c * s, z, y, x)
    index = tuple(slice(None) if r in out_axes else 0 for r in "tczyx")
    return np.asarray(data[index])


def reference_mean(data: np.ndarray) -> np.ndarray:
    """2×2 mean, floor-halved, integers rounded half up: computed in float64 independently."""
    h, w = data.shape[-2] // 2, data.shape[-1] // 2
    blocks = data[..., : 2 * h, : 2 * w].astype(np.float64)
    blocks = blocks.reshape(*data.shape[:-2], h, 2, w, 2)
    mean = blocks.mean(axis=(-3, -1))
    if data.dtype.kind == "f":
        return mean.astype(data.dtype)
    return np.floor(mean + 0.5).astype(data.dtype)
