"""TIFF-family input through tifffile: OME-TIFF (SubIFD or page pyramids, multi-file sets),
SVS, NDPI and other tiled pyramids, BigTIFF, either byte order.

Pixels come through tifffile's zarr store (`TiffPageSeries.aszarr(level=…)`), which decodes
only the tiles or strips a band touches (in threads, `maxworkers`). One exception: an
uncompressed series stored contiguously (ImageJ's and tifffile's default, often one strip per
plane) is read with `os.pread` at the band's byte offset, since the store's chunk would be a
whole plane.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from idrserve.convert import metadata as md
from idrserve.convert.inputs import ROLE_OF_AXIS, InputImage, InputShape, Unit, check_dtype, native
from idrserve.convert.options import ConvertError
from idrserve.sources import omexml
from idrserve.sources.tiff import SUPPORTED, sniff_format

# Series names tifffile gives when the file names nothing.
_GENERIC_NAMES = frozenset({"", "Baseline", "Unnamed", "Series", "Image0"})


def map_axes(axes: str, shape: Sequence[int]) -> dict[str, int]:
    """Role (t, c, z, y, x, s) → index in tifffile's `axes`.

    Axes idrserve has no role for (I for a plain page sequence, Q, …) become z, then t, then
    c when longer than 1, and are read at index 0 otherwise.
    """
    roles: dict[str, int] = {}
    others = []
    for i, (axis, n) in enumerate(zip(axes, shape, strict=True)):
        role = ROLE_OF_AXIS.get(axis)
        if role is None or role in roles:
            if n > 1:
                others.append(i)
            continue
        roles[role] = i
    for i in others:
        free = next((r for r in ("z", "t", "c") if r not in roles), None)
        if free is None:
            raise ConvertError(f"axes {axes} {tuple(shape)}: more stacked axes than t, c and z")
        roles[free] = i
    if "y" not in roles or "x" not in roles:
        raise ConvertError(f"axes {axes}: no Y and X")
    return roles


class TiffInput(InputImage):
    """One series of a TIFF file (`--series`), with its pyramid levels."""

    def __init__(self, path: Path, series: int, workers: int) -> None:
        self._path = path
        self._workers = workers
        _check_format(path)
        try:
            self._tif = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, ValueError, EOFError, OSError) as exc:
            raise ConvertError(f"{path}: not a readable TIFF file ({_short(exc)})") from exc
        try:
            all_series = self._tif.series
            if not all_series:
                raise ConvertError(f"{path}: the TIFF file holds no image")
            if series >= len(all_series):
                raise ConvertError(
                    f"--series {series}: {path.name} has {len(all_series)} series"
                    f" (0–{len(all_series) - 1})"
                )
            self._series = all_series[series]
            shape, info = self._describe(series)
        except BaseException:
            self._tif.close()
            raise
        stat = path.stat()
        identity = {"path": str(path.resolve()), "size": stat.st_size}
        identity |= {"mtime_ns": stat.st_mtime_ns, "series": series}
        super().__init__(shape, info, identity)
        self._arrays: dict[int, Any] = {}
        self._fd: int | None = None

    # ---- shape and metadata --------------------------------------------------------------

    def _describe(self, index: int) -> tuple[InputShape, md.ImageInfo]:
        s = self._series
        self._roles = roles = map_axes(s.axes, s.shape)
        sizes = {r: s.shape[i] for r, i in roles.items()}
        samples = sizes.get("s", 1)
        groups, size_t, size_z = sizes.get("c", 1), sizes.get("t", 1), sizes.get("z", 1)
        level_sizes = []
        for lv in s.levels:
            if len(lv.shape) != len(s.shape) or any(
                lv.shape[i] != s.shape[i] for r, i in roles.items() if r not in "yx"
            ):
                break  # a level that is not the same image at a lower resolution
            level_sizes.append((lv.shape[roles["y"]], lv.shape[roles["x"]]))
        axes = "".join(a for a in "tczyx" if a in "cyx" or sizes.get(a, 1) > 1)
        shape = InputShape(
            axes=axes,
            size_t=size_t,
            size_c=groups * samples,
            size_z=size_z,
            samples=samples,
            dtype=check_dtype(np.dtype(s.dtype), self._path.name),
            level_sizes=tuple(level_sizes),
        )
        info = self._info(index, shape)
        if "z" in info.sizes and "z" not in axes:
            # One plane with a z spacing (OME-XML PhysicalSizeZ): a z axis of 1 keeps it, as
            # the TIFF source reports it.
            shape = dataclasses.replace(shape, axes=axes.replace("c", "cz"))
        return shape, info

    def _info(self, index: int, shape: InputShape) -> md.ImageInfo:
        tif, s = self._tif, self._series
        page = s.keyframe
        name = s.name if s.name not in _GENERIC_NAMES else ""
        names: tuple[str | None, ...] = ()
        colours: tuple[str | None, ...] = ()
        sizes: dict[str, md.PhysicalSize] = {}
        xml = tif.ome_metadata if tif.is_ome else None
        ome = md.parse_ome_xml(xml, index, s.name) if xml else None
        if ome is not None:
            name = ome.name or name
            names, colours, sizes = ome.channel_names, ome.channel_colours, ome.sizes
        elif tif.is_imagej and tif.imagej_metadata:
            sizes = md.imagej_sizes(tif.imagej_metadata, _ratio(page.tags.get("XResolution")))
        if "x" not in sizes:  # SVS's MPP, else the page's resolution tags, as the TIFF source
            sizes.update(omexml.vendor_sizes(page))
        rgb = omexml.is_rgb(page.photometric, shape.samples)  # as the TIFF source
        names, colours = md.channel_labels(shape.size_c, shape.samples, names, colours)
        return md.ImageInfo(
            name=name or _stem(self._path),
            channel_names=names,
            channel_colours=colours,
            sizes=sizes,
            rgb=rgb,
        )

    # ---- checks --------------------------------------------------------------------------

    def check(self, levels: Sequence[int]) -> None:
        """Every plane present, inside the file, and decodable: fail now, not mid-way."""
        for j in levels:
            lv = self._series.levels[j]
            where = f"{self._path.name} (level {j})" if j else self._path.name
            if lv.dataoffset is not None:
                end = lv.dataoffset + lv.nbytes
                size = lv.keyframe.parent.filehandle.size
                if end > size:
                    raise ConvertError(f"{where}: truncated ({size} of {end} bytes)")
                continue
            pages = list(lv.pages)
            missing = sum(p is None for p in pages)
            if missing:
                raise ConvertError(
                    f"{where}: {missing} of {len(pages)} planes missing"
                    " (a file of a multi-file OME-TIFF set, or a truncated file)"
                )
            for page in pages:
                assert page is not None
                size = page.parent.filehandle.size
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)]
                if ends and max(ends) > size:
                    raise ConvertError(f"{where}: truncated ({size} of {max(ends)} bytes)")
            self._decode_first_chunk(j, where)

    def _decode_first_chunk(self, level: int, where: str) -> None:
        arr = self._array(level)
        first = tuple(slice(0, c) for c in arr.chunks)
        try:
            arr[first]
        except Exception as exc:  # codec errors come as many classes (imagecodecs, tifffile)
            compression = self._series.levels[level].keyframe.compression
            label = getattr(compression, "name", str(compression))
            raise ConvertError(f"{where}: cannot decode {label} data ({_short(exc)})") from exc

    # ---- pixels --------------------------------------------------------------------------

    def row_block(self, level: int) -> int:
        if self._contiguous(level):
            return 1
        return int(self._array(level).chunks[self._roles["y"]])

    def _contiguous(self, level: int) -> bool:
        lv = self._series.levels[level]
        page = lv.keyframe
        return bool(
            lv.dataoffset is not None
            and page.compression == 1
            and page.predictor == 1
            and page.fillorder == 1
            and page.bitspersample == 8 * np.dtype(lv.dtype).itemsize
        )

    def _array(self, level: int) -> Any:
        arr = self._arrays.get(level)
        if arr is None:
            store = self._series.aszarr(level=level, maxworkers=self._workers)
            arr = zarr.open_array(store, mode="r", zarr_format=2)
            if tuple(arr.shape) != tuple(self._series.levels[level].shape):
                raise ConvertError(f"{self._path.name}: level {level} has an unexpected shape")
            self._arrays[level] = arr
        return arr

    def _selection(self, unit: Unit, start: int, stop: int) -> tuple[int | slice, ...]:
        t, g, z = unit
        index: dict[str, int | slice] = {"t": t, "c": g, "z": z, "y": slice(start, stop)}
        by_axis = {i: index.get(r, slice(None)) for r, i in self._roles.items()}
        return tuple(by_axis.get(i, 0) for i in range(len(self._series.shape)))

    def _read_rows(self, level: int, unit: Unit, start: int, stop: int) -> np.ndarray:
        sel = self._selection(unit, start, stop)
        if self._contiguous(level):
            data = self._pread(level, sel, start, stop)
        else:
            try:
                data = self._array(level)[sel]
            except Exception as exc:
                raise ConvertError(
                    f"{self._path.name}: cannot read rows {start}–{stop} of level {level}"
                    f" ({_short(exc)})"
                ) from exc
        # Order what is left (y, x and maybe s, in the file's order) as (s, y, x).
        kept = sorted((i, r) for r, i in self._roles.items() if r in "yxs")
        order = [k for k, (_, r) in enumerate(kept) if r == "s"]
        order += [k for k, (_, r) in enumerate(kept) if r == "y"]
        order += [k for k, (_, r) in enumerate(kept) if r == "x"]
        data = data.transpose(order)
        if data.ndim == 2:
            data = data[np.newaxis]
        return native(data)

    def _pread(self, level: int, sel: tuple[int | slice, ...], start: int, stop: int) -> Any:
        """Rows of a contiguous, uncompressed series read at their byte offsets."""
        lv = self._series.levels[level]
        shape, dtype = tuple(lv.shape), np.dtype(lv.dtype)
        y = self._roles["y"]
        strides = np.cumprod((*shape[1:], 1)[::-1])[::-1]  # elements, C order
        inner = int(np.prod(shape[y + 1 :], dtype=np.int64))
        if self._fd is None:
            self._fd = os.open(lv.keyframe.parent.filehandle.path, os.O_RDONLY)
        # Axes before y that are read whole (planar samples): one contiguous run per index.
        loops = [i for i in range(y) if isinstance(sel[i], slice)]
        runs = np.ndindex(*(shape[i] for i in loops)) if loops else [()]
        pieces = []
        for run in runs:
            index = [s if isinstance(s, int) else 0 for s in sel]
            for i, n in zip(loops, run, strict=True):
                index[i] = n
            index[y] = start
            first = int(np.dot(index, strides))
            count = (stop - start) * inner
            offset = (lv.dataoffset or 0) + first * dtype.itemsize
            raw = os.pread(self._fd, count * dtype.itemsize, offset)
            if len(raw) != count * dtype.itemsize:
                raise ConvertError(f"{self._path.name}: truncated at rows {start}–{stop}")
            pieces.append(np.frombuffer(raw, dtype).reshape(stop - start, *shape[y + 1 :]))
        return np.stack(pieces) if loops else pieces[0]

    def close(self) -> None:
        super().close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tif.close()


def _check_format(path: Path) -> None:
    """Name a format that is not TIFF by its magic number (as the server's 415 does), with
    the formats read here and the converter for the others."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise ConvertError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    found = sniff_format(head)
    if found not in ("TIFF", "BigTIFF", "unknown"):
        raise ConvertError(
            f"{path}: a {found} file, not a TIFF; idrserve convert reads OME-Zarr and"
            f" {SUPPORTED} (bioformats2raw converts other formats to OME-Zarr)"
        )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _rational(tag: Any) -> tuple[int, int] | None:
    value = getattr(tag, "value", None)
    if isinstance(value, tuple) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def _ratio(tag: Any) -> float | None:
    value = _rational(tag)
    return value[0] / value[1] if value and value[1] else None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.btf", ".tiff", ".tif", ".svs", ".ndpi", ".btf"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
