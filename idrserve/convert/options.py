"""What `idrserve convert` is asked to do, and the one error it reports."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Compressor = Literal["blosc-lz4", "blosc-zstd", "zstd"]
COMPRESSORS: tuple[Compressor, ...] = ("blosc-lz4", "blosc-zstd", "zstd")
# bioformats2raw's Blosc level, and zstd's own default.
DEFAULT_LEVEL = {"blosc-lz4": 5, "blosc-zstd": 5, "zstd": 3}
# `--levels auto` halves until the longest side is at most this (bioformats2raw's default).
AUTO_MIN_SIDE = 256
# `--shard` without a size: this many chunks a side.
DEFAULT_SHARD_CHUNKS = 4

_ID_NAME = re.compile(r"^(\d+)(?:\.ome)?\.zarr$")


class ConvertError(Exception):
    """Bad input or options: reported as one line and a non-zero exit status."""


class OptionsError(ConvertError):
    """Options that contradict each other or the input (exit status 2, as for usage)."""


@dataclass(frozen=True, slots=True)
class Options:
    """Every choice of one conversion; checked by `validate`."""

    input: Path
    output: Path
    ngff: Literal["0.4", "0.5"] = "0.4"
    chunks: int = 256
    shard: int | None = None  # shard side in pixels (0.5 only); None: unsharded
    compressor: Compressor = "blosc-lz4"
    level: int | None = None  # None: DEFAULT_LEVEL of the compressor
    levels: int | None = None  # None: auto
    series: int = 0
    workers: int = 2
    resume: bool = False
    overwrite: bool = False
    image_id: int | None = None
    catalog_out: Path | None = None

    @property
    def clevel(self) -> int:
        return DEFAULT_LEVEL[self.compressor] if self.level is None else self.level

    @property
    def band(self) -> int:
        """Rows written at a time at every level: a chunk row, or a shard row."""
        return self.shard or self.chunks

    def validate(self) -> None:
        """Raise `ConvertError` for contradictory or out-of-range options."""
        if self.chunks < 16 or self.chunks % 16:
            raise OptionsError(f"--chunks {self.chunks}: a multiple of 16 is needed (256, 512, …)")
        if self.shard is not None:
            if self.ngff != "0.5":
                raise OptionsError("--shard needs --ngff 0.5 (Zarr v2 has no shards)")
            if self.shard < self.chunks or self.shard % self.chunks:
                raise OptionsError(
                    f"--shard {self.shard}: a multiple of --chunks {self.chunks} is needed"
                )
        if self.compressor not in COMPRESSORS:
            raise OptionsError(f"--compressor {self.compressor}: one of {', '.join(COMPRESSORS)}")
        low, high = (1, 22) if self.compressor == "zstd" else (0, 9)
        if not low <= self.clevel <= high:
            raise OptionsError(f"--level {self.clevel}: {self.compressor} takes {low}..{high}")
        if self.levels is not None and self.levels < 1:
            raise OptionsError(f"--levels {self.levels}: at least 1")
        if self.series < 0:
            raise OptionsError(f"--series {self.series}: a series number from 0")
        if self.workers < 1:
            raise OptionsError(f"--workers {self.workers}: at least 1")
        if self.catalog_out is not None:
            self.catalog_id()

    def catalog_id(self) -> int:
        """The image id of the `--catalog-out` row: `--id`, else the `<id>.zarr` output name."""
        if self.image_id is not None:
            return self.image_id
        match = _ID_NAME.match(self.output.name)
        if match is None:
            raise OptionsError(
                f"--catalog-out needs an image id: give --id N or name the output <id>.zarr"
                f" (not {self.output.name})"
            )
        return int(match.group(1))
