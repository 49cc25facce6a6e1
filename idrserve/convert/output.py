"""The output image while it is written: its level arrays, band I/O and completion journal.

Arrays are created through zarr-python (Zarr v2 with `/` chunk keys for NGFF 0.4, Zarr v3
with optional sharding for 0.5); bands are stored by `chunks.ChunkWriter` and read back
through zarr. After a band is written, the CRC-32C of each of its objects goes into the
journal, one JSON line per band; `--resume` trusts a band only when every object's CRC
still matches (`Journal.open`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec
from zarr.storage import LocalStore

from idrserve.convert.chunks import ChunkWriter, checksum, codec
from idrserve.convert.inputs import Unit
from idrserve.convert.options import ConvertError, Options
from idrserve.convert.plan import Layout

JOURNAL = ".idrserve-convert.jsonl"
JOURNAL_FORMAT = 1

BandId = tuple[int, Unit, int]  # level, (t, channel group, z), band


def _compressor(options: Options, itemsize: int) -> Any:
    """The compressor as the array metadata names it (`chunks.codec` does the encoding)."""
    if options.ngff == "0.4":
        return codec(options)
    if options.compressor == "zstd":
        return ZstdCodec(level=options.clevel)
    cname: Literal["lz4", "zstd"] = "zstd" if options.compressor == "blosc-zstd" else "lz4"
    return BloscCodec(cname=cname, clevel=options.clevel, shuffle="shuffle", typesize=itemsize)


class Output:
    """The level arrays under `root` (the temporary directory beside the final output)."""

    def __init__(self, root: Path, layout: Layout, options: Options, *, create: bool) -> None:
        self.root = root
        self.layout = layout
        self._v3 = options.ngff == "0.5"
        self._writer = ChunkWriter(root, layout, options)
        store = LocalStore(root)
        fmt: Literal[2, 3] = 3 if self._v3 else 2
        if create:
            zarr.open_group(store, mode="w", zarr_format=fmt)
            self.arrays = [self._create(store, k, options) for k in range(len(layout.levels))]
        else:
            self.arrays = [
                zarr.open_array(store, path=str(k), mode="r+", zarr_format=fmt)
                for k in range(len(layout.levels))
            ]

    def _create(self, store: LocalStore, level: int, options: Options) -> Any:
        layout = self.layout
        common: dict[str, Any] = {
            "name": str(level),
            "shape": layout.shape(level),
            "dtype": layout.dtype,
            "chunks": layout.chunks(level),
            "fill_value": 0,
            "compressors": _compressor(options, layout.dtype.itemsize),
        }
        if self._v3:
            return zarr.create_array(
                store,
                zarr_format=3,
                shards=layout.shards(level),
                serializer=BytesCodec(),
                dimension_names=list(layout.axes),
                **common,
            )
        return zarr.create_array(
            store,
            zarr_format=2,
            chunk_key_encoding={"name": "v2", "separator": "/"},
            **common,
        )

    def _selection(self, level: int, unit: Unit, band: int) -> tuple[int | slice, ...]:
        layout = self.layout
        t, g, z = unit
        start, stop = layout.rows(level, band)
        index: dict[str, int | slice] = {
            "t": t,
            "c": slice(g * layout.samples, (g + 1) * layout.samples),
            "z": z,
            "y": slice(start, stop),
            "x": slice(None),
        }
        return tuple(index[a] for a in layout.axes)

    def write(self, level: int, unit: Unit, band: int, data: np.ndarray) -> dict[str, int]:
        """Write one band (samples, rows, width); return the CRC-32C of each stored object."""
        return self._writer.write(level, unit, band, data)

    def read(self, level: int, unit: Unit, band: int) -> np.ndarray:
        """One band as written: (samples, rows, width)."""
        return np.asarray(self.arrays[level][self._selection(level, unit, band)])

    def _crc(self, key: str) -> int:
        return checksum((self.root / key).read_bytes())

    def verify(self, crcs: Mapping[str, int]) -> bool:
        """Whether every object still holds the bytes the journal recorded."""
        try:
            return all(self._crc(key) == crc for key, crc in crcs.items())
        except OSError:
            return False

    def stored_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def set_attributes(self, attrs: dict[str, Any]) -> None:
        """The image group's NGFF attributes (`.zattrs`, or `attributes.ome` of `zarr.json`)."""
        group = zarr.open_group(LocalStore(self.root), mode="r+")
        group.attrs.update({"ome": attrs} if self._v3 else attrs)


class Journal:
    """Completion records: a header naming the input and options, then one line per band."""

    def __init__(self, root: Path, done: dict[BandId, dict[str, int]]) -> None:
        self.path = root / JOURNAL
        self._done = done
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    @classmethod
    def create(cls, root: Path, header: dict[str, Any]) -> Journal:
        (root / JOURNAL).write_text(json.dumps({"format": JOURNAL_FORMAT, **header}) + "\n")
        return cls(root, {})

    @staticmethod
    def check_header(root: Path, header: dict[str, Any]) -> None:
        """`ConvertError` unless the partial output was started with the same input and
        options."""
        try:
            with (root / JOURNAL).open(encoding="utf-8") as fh:
                found = json.loads(fh.readline())
        except (OSError, ValueError) as exc:
            raise ConvertError(f"cannot resume from {root.name}: no readable journal") from exc
        if found != json.loads(json.dumps({"format": JOURNAL_FORMAT, **header})):
            raise ConvertError(
                f"cannot resume from {root.name}: it was started from another input or with"
                " other options (run without --resume to start over)"
            )

    @classmethod
    def open(cls, root: Path, verify: Callable[[Mapping[str, int]], bool]) -> Journal:
        """Resume: the recorded bands whose objects still `verify`."""
        lines = (root / JOURNAL).read_text(encoding="utf-8").splitlines()
        records: dict[BandId, dict[str, int]] = {}
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                t, g, z = (int(i) for i in rec["unit"])
                band = (int(rec["level"]), (t, g, z), int(rec["band"]))
                records[band] = {str(k): int(v) for k, v in rec["crc"].items()}
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the interruption
        return cls(root, {band: crcs for band, crcs in records.items() if verify(crcs)})

    def done(self, level: int, unit: Unit, band: int) -> bool:
        return (level, unit, band) in self._done

    @property
    def bands_done(self) -> int:
        return len(self._done)

    def record(self, level: int, unit: Unit, band: int, crcs: dict[str, int]) -> None:
        line = json.dumps({"level": level, "unit": list(unit), "band": band, "crc": crcs})
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()  # a killed process keeps what the kernel already has
            self._done[(level, unit, band)] = crcs

    def close(self) -> None:
        self._file.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
