"""An existing OME-Zarr image (NGFF 0.1–0.5) as input, to re-chunk or change version.

Its metadata is parsed by the server's own NGFF parser (`sources/ngff.py`); its levels serve
as output levels where their shapes fit (`plan.plan_levels`), so a re-chunked image keeps
its pyramid's values; its `omero` block, axes units and scales are carried over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from idrserve.convert import metadata as md
from idrserve.convert.inputs import InputImage, InputShape, Unit, check_dtype, native
from idrserve.convert.options import ConvertError
from idrserve.sources import ngff


class ZarrInput(InputImage):
    """One image of an OME-Zarr: the group itself, or series N of a bioformats2raw layout."""

    def __init__(self, path: Path, series: int = 0) -> None:
        self._path = path
        label = path.name.removesuffix(".zarr").removesuffix(".ome")
        try:
            group = zarr.open_group(path, mode="r")
            attrs = _ome_attrs(group)
            if "multiscales" not in attrs and "bioformats2raw.layout" in attrs:
                # bioformats2raw writes each series of a file as a group named by its number.
                if str(series) not in group:
                    raise ConvertError(f"--series {series}: {path.name} has no series {series}")
                path = path / str(series)
                group = zarr.open_group(path, mode="r")
                attrs = _ome_attrs(group)
            elif series:
                raise ConvertError(f"--series {series}: an OME-Zarr image has one series (0)")
            ms = ngff.parse_multiscale(attrs)
            self._arrays: list[Any] = [group[p] for p in ms.paths]
        except (ngff.NgffError, KeyError, ValueError, OSError) as exc:
            raise ConvertError(f"{path}: not a readable OME-Zarr image ({exc})") from exc
        rank = len(self._arrays[0].shape)
        try:
            roles = ms.axes if ms.axes is not None and len(ms.axes) == rank else None
            self._roles = roles or ngff.default_axes(rank)
        except ngff.NgffError as exc:
            raise ConvertError(f"{path}: {exc}") from exc
        sizes = dict(zip(self._roles, self._arrays[0].shape, strict=True))
        level_sizes = []
        for arr in self._arrays:
            dims = dict(zip(self._roles, arr.shape, strict=True))
            if any(dims[r] != sizes[r] for r in "tcz" if r in dims):
                break
            level_sizes.append((dims["y"], dims["x"]))
        shape = InputShape(
            axes="".join(a for a in "tczyx" if a in self._roles or a == "c"),
            size_t=sizes.get("t", 1),
            size_c=sizes.get("c", 1),
            size_z=sizes.get("z", 1),
            samples=1,
            dtype=check_dtype(np.dtype(self._arrays[0].dtype), path.name),
            level_sizes=tuple(level_sizes),
        )
        info = md.ImageInfo(
            name=ms.name or label,
            sizes=_sizes(ms, self._roles),
            omero=ms.omero,
        )
        meta_file = next(p for p in (path / "zarr.json", path / ".zattrs") if p.exists())
        stat = meta_file.stat()
        identity = {"path": str(path.resolve()), "mtime_ns": stat.st_mtime_ns}
        identity["shapes"] = [list(a.shape) for a in self._arrays]
        super().__init__(shape, info, identity)

    def check(self, levels: Sequence[int]) -> None:
        """Nothing to check ahead: zarr reports a missing or corrupt chunk when read."""

    def row_block(self, level: int) -> int:
        return int(self._arrays[level].chunks[self._roles.index("y")])

    def _read_rows(self, level: int, unit: Unit, start: int, stop: int) -> np.ndarray:
        t, c, z = unit
        index: dict[str, int | slice] = {"t": t, "c": c, "z": z}
        index |= {"y": slice(start, stop), "x": slice(None)}
        data = self._arrays[level][tuple(index[r] for r in self._roles)]
        return native(np.asarray(data))[np.newaxis]


def _ome_attrs(group: Any) -> dict[str, Any]:
    """The NGFF keys of a group: its attributes (0.4), or their `ome` object (0.5)."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome") if group.metadata.zarr_format == 3 else None
    return dict(ome) if isinstance(ome, Mapping) else attrs


def _sizes(ms: ngff.Multiscale, roles: tuple[str, ...]) -> dict[str, md.PhysicalSize]:
    """Level-0 scale of x, y, z and t with the axes' units (kept as given)."""
    out: dict[str, md.PhysicalSize] = {}
    if ms.scale is None or len(ms.scale) != len(roles):
        return out
    units: tuple[Any, ...] = ms.units or (None,) * len(roles)
    for role, value, unit in zip(roles, ms.scale, units, strict=True):
        if role in "xyzt" and value > 0:
            out[role] = md.PhysicalSize(value, unit if isinstance(unit, str) else None)
    return out
