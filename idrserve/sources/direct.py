"""Direct chunk reads for local Zarr v2 arrays: the hot path of a cold tile.

Why not zarr-python here: on a 256² tile from 256² chunks (3 channels, blosc-lz4) zarr's async
`getitem` costs ≈ 0.8 ms of wall time per tile even with the zarrs pipeline, most of it in
per-call Python machinery and thread hops, while reading three page-cached chunk files and
decoding them costs ≈ 0.25 ms. `bench/bench_http.py` runs both side by side: 1.13× the cold
256² tiles/s and 1.08× the 512² tiles/s of zarr-python reads (`bench/results/http-*.md`),
which is what lifts a single core to the 900 tiles/s target. The reader covers the common
case only — Zarr v2, local files, C order, no filters, any numcodecs compressor — and the
whole selection runs in one executor call. Everything else (Zarr v3, sharding, remote stores,
filters, F order) goes through zarr-python.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numcodecs.blosc
import numpy as np
from numcodecs.abc import Codec
from numcodecs.blosc import decompress as blosc_decompress

from idrserve.sources.bloscchunks import CheckedBlosc, check_blosc_length, checked

# Decode in the calling thread, never with blosc's own threads: requests are the parallelism
# (pool threads, workers). Left at None, numcodecs also probes `multiprocessing` on every
# decode to decide, which py-spy put at 2 % of a cold tile.
numcodecs.blosc.use_threads = False


@dataclass(frozen=True, slots=True)
class DirectV2Array:
    """A local Zarr v2 array read chunk by chunk with numcodecs."""

    root: Path
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype[Any]
    fill_value: Any
    separator: str
    codec: Codec | None

    @classmethod
    def from_doc(cls, root: Path, doc: dict[str, Any]) -> DirectV2Array | None:
        """The reader for `doc` (a `.zarray`), or None when the array needs zarr-python."""
        if doc.get("zarr_format") != 2 or doc.get("filters") or doc.get("order", "C") != "C":
            return None
        try:
            dtype = np.dtype(doc["dtype"])
            if dtype.hasobject or dtype.fields is not None:
                return None
            compressor = doc.get("compressor")
            # Blosc checked against cut chunks (bloscchunks.py), on both decode paths below.
            codec = checked(numcodecs.get_codec(dict(compressor))) if compressor else None
            fill = doc.get("fill_value")
            fill_value = np.array(0 if fill is None else fill).astype(dtype)
            return cls(
                root=root,
                shape=tuple(int(s) for s in doc["shape"]),
                chunks=tuple(int(c) for c in doc["chunks"]),
                dtype=dtype,
                fill_value=fill_value,
                separator=str(doc.get("dimension_separator") or "."),
                codec=codec,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def _raw(self, index: tuple[int, ...]) -> bytes | None:
        # Plain string paths: pathlib's parsing cost as much as reading a cached chunk; and
        # os-level calls: a buffered file object costs 5 µs more per chunk (open, isatty
        # probes, a second read for EOF) than open/fstat/read/close.
        path = f"{self.root}/{self.separator.join(map(str, index))}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size)
            while len(data) < size:  # read(2) may return less than asked (signals, NFS)
                more = os.read(fd, size - len(data))
                if not more:
                    break
                data += more
            return data
        finally:
            os.close(fd)

    def _chunk(self, raw: bytes) -> np.ndarray:
        data = self.codec.decode(raw) if self.codec is not None else raw
        return np.frombuffer(data, dtype=self.dtype).reshape(self.chunks)

    def read(self, selector: tuple[int | slice, ...]) -> np.ndarray:
        """Basic selection (ints and step-1 slices within bounds), like `arr[selector]`."""
        whole = self._whole_chunk(selector)
        if whole is not None:
            return whole
        starts: list[int] = []
        stops: list[int] = []
        for sel, size in zip(selector, self.shape, strict=True):
            if isinstance(sel, slice):
                start, stop, step = sel.indices(size)
                if step != 1:
                    raise ValueError("direct reads take step-1 slices only")
            else:
                start, stop = int(sel), int(sel) + 1
            starts.append(start)
            stops.append(stop)
        out = np.empty([b - a for a, b in zip(starts, stops, strict=True)], dtype=self.dtype)
        ranges = [
            range(a // c, (b - 1) // c + 1) if b > a else range(0)
            for a, b, c in zip(starts, stops, self.chunks, strict=True)
        ]
        for index in itertools.product(*ranges):
            src: list[slice] = []
            dst: list[slice] = []
            for i, a, b, c in zip(index, starts, stops, self.chunks, strict=True):
                lo, hi = max(a, i * c), min(b, (i + 1) * c)
                src.append(slice(lo - i * c, hi - i * c))
                dst.append(slice(lo - a, hi - a))
            self._put(index, out[tuple(dst)], tuple(src))
        drop = tuple(0 if not isinstance(s, slice) else slice(None) for s in selector)
        return out[drop]

    def _whole_chunk(self, selector: tuple[int | slice, ...]) -> np.ndarray | None:
        """The common tile case, without the general loop's bookkeeping: `selector` is
        exactly one whole chunk (ints on the leading axes, chunk-aligned full-chunk slices
        on the rest). None when it is anything else."""
        index: list[int] = []
        for sel, size, chunk in zip(selector, self.shape, self.chunks, strict=True):
            if isinstance(sel, slice):
                start, stop = sel.start or 0, sel.stop
                if sel.step not in (None, 1) or start % chunk or stop != start + chunk:
                    return None
                if stop > size:
                    return None
                index.append(start // chunk)
            else:
                if chunk != 1 or not 0 <= sel < size:
                    return None
                index.append(sel)
        shape = tuple(
            c for sel, c in zip(selector, self.chunks, strict=True) if isinstance(sel, slice)
        )
        out = np.empty(self.chunks, dtype=self.dtype)
        self._put(tuple(index), out, ())
        return out.reshape(shape)

    def _put(self, index: tuple[int, ...], target: np.ndarray, src: tuple[slice, ...]) -> None:
        """Chunk `index`, cut to `src`, into `target` (its fill value when it is missing)."""
        raw = self._raw(index)
        if raw is None:
            target[...] = self.fill_value
        elif (
            self.codec is not None
            and target.shape == self.chunks
            and target.flags.c_contiguous
            and self.dtype.isnative
        ):
            # A whole chunk into a contiguous slot: decode in place, no extra copy.
            if type(self.codec) is CheckedBlosc:
                # Blosc.decode's own buffer checks (numcodecs.compat) cost 4 µs a chunk, 12 a
                # 3-channel tile, for a file's bytes and a contiguous plane that pass them
                # anyway; decompress still checks the header's size against the plane's.
                check_blosc_length(raw)
                blosc_decompress(raw, target)
            else:
                self.codec.decode(raw, out=target)
        else:
            target[...] = self._chunk(raw)[src]


def open_direct(level_dir: Path, doc_bytes: bytes) -> DirectV2Array | None:
    try:
        doc = json.loads(doc_bytes)
    except ValueError:
        return None
    return DirectV2Array.from_doc(level_dir, doc) if isinstance(doc, dict) else None
