"""An input image read as bands of rows, whatever the file: `open_input` picks the reader.

Every reader hands out `(samples, rows, width)` arrays of one (t, channel group, z) plane in
native byte order. Reads are widened to whole input chunks (TIFF tiles or strips, Zarr
chunks) and the last widened block is kept per level, so consecutive bands never decode an
input chunk twice and no more than one block of chunk rows is held.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from idrserve.convert.metadata import ImageInfo
from idrserve.convert.options import ConvertError

Unit = tuple[int, int, int]  # t, channel group, z

# tifffile's axis letters that idrserve has a role for; S (samples) becomes channels.
ROLE_OF_AXIS = {"T": "t", "C": "c", "Z": "z", "Y": "y", "X": "x", "S": "s"}


@dataclass(frozen=True, slots=True)
class InputShape:
    axes: str  # output axes, a subsequence of "tczyx" (c, y, x always)
    size_t: int
    size_c: int  # output channels: channel groups × samples
    size_z: int
    samples: int
    dtype: np.dtype[Any]  # native byte order
    level_sizes: tuple[tuple[int, int], ...]  # (height, width) of each input level


@dataclass(slots=True)
class _Block:
    level: int
    unit: Unit
    start: int
    stop: int
    data: np.ndarray = field(repr=False)


class InputImage(ABC):
    """A readable input: its shape, metadata and an identity that says it has not changed."""

    def __init__(self, shape: InputShape, info: ImageInfo, identity: dict[str, Any]) -> None:
        self.shape = shape
        self.info = info
        self.identity = identity
        self._blocks: dict[int, _Block] = {}

    def read(self, level: int, unit: Unit, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of one plane of `level`: (samples, rows, width), native order."""
        block = self._blocks.get(level)
        if block is None or block.unit != unit or not block.start <= start < stop <= block.stop:
            step = max(1, self.row_block(level))
            height = self.shape.level_sizes[level][0]
            lo, hi = start // step * step, min(-(-stop // step) * step, height)
            self._blocks.pop(level, None)  # let the old block go before reading the next
            block = _Block(level, unit, lo, hi, self._read_rows(level, unit, lo, hi))
            self._blocks[level] = block
        return block.data[:, start - block.start : stop - block.start]

    @abstractmethod
    def check(self, levels: Sequence[int]) -> None:
        """Raise `ConvertError` now for anything that would fail while reading `levels`."""

    @abstractmethod
    def row_block(self, level: int) -> int:
        """Rows of one input chunk at `level` (reads are widened to multiples of it)."""

    @abstractmethod
    def _read_rows(self, level: int, unit: Unit, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of one plane: (samples, rows, width), native byte order."""

    def close(self) -> None:
        self._blocks.clear()


def native(data: np.ndarray) -> np.ndarray:
    """`data` in native byte order (big-endian TIFFs and Zarr arrays exist)."""
    if data.dtype.isnative:
        return data
    return data.astype(data.dtype.newbyteorder("="))


def check_dtype(dtype: np.dtype[Any], where: str) -> np.dtype[Any]:
    """The native dtype the output stores, or `ConvertError` for one idrserve cannot serve."""
    native_dtype = dtype.newbyteorder("=")
    kind, size = native_dtype.kind, native_dtype.itemsize
    if kind not in "iuf" or size > 8 or (kind == "f" and size < 4):
        raise ConvertError(f"{where}: pixel type {dtype} is not supported (integers, float32/64)")
    return native_dtype


def is_ome_zarr(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).is_file() for name in (".zattrs", ".zgroup", "zarr.json")
    )


def open_input(path: Path, series: int, workers: int) -> InputImage:
    """The reader for `path`: an OME-Zarr directory, or anything tifffile opens.

    `path` may end in `#series=N`, as a catalog location does, when no file has that name.
    """
    if not path.exists():
        from idrserve.sources.tiff import split_location

        file, named = split_location(path)
        if file != path and file.is_file():
            if series not in (0, named):
                raise ConvertError(f"--series {series} and {path.name} name different series")
            path, series = file, named
    if not path.exists():
        raise ConvertError(f"{path}: no such file or directory")
    if path.is_dir():
        if not is_ome_zarr(path):
            raise ConvertError(f"{path}: a directory that is not an OME-Zarr image")
        from idrserve.convert.zarrin import ZarrInput

        return ZarrInput(path, series)
    from idrserve.convert.tiffin import TiffInput

    return TiffInput(path, series, workers)
