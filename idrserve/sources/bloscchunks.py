"""Blosc chunks checked against their header's length before c-blosc decodes them.

Why: c-blosc (numcodecs' Blosc, hence zarr-python's default pipeline) trusts the compressed
length a chunk's header gives (bytes 12–15). A chunk cut short (an interrupted copy, a
truncated upload) is decoded from past the end of the bytes read, whatever memory follows
them, without an error: a chunk stored uncompressed (blosc's MEMCPYED flag) is copied from
there, and a compressed one cut by 100 bytes decoded without complaint in our tests. A chunk
is exactly its header's length, so anything else is refused before decoding. The zarrs
pipeline (local native-endian reads through zarr-python) refuses such chunks itself; the direct
reader (`sources/direct.py`) and zarr-python's own pipeline (remote stores, big-endian data)
use these: `checked` for a Zarr v2 compressor, `checked_codecs` for a Zarr v3 codec chain
(inside shards too).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from numcodecs.blosc import Blosc
from zarr.codecs import BloscCodec, ShardingCodec


def check_blosc_length(raw: Any) -> None:
    """Raise ValueError unless `raw` (a contiguous buffer) is as long as its header says."""
    data = memoryview(raw).cast("B")
    header = int.from_bytes(data[12:16], "little") if data.nbytes >= 16 else None
    if header != data.nbytes:
        raise ValueError(f"Blosc chunk of {data.nbytes} bytes, its header says {header}")


class CheckedBlosc(Blosc):  # type: ignore[misc]  # numcodecs ships no type information
    """numcodecs' Blosc with `check_blosc_length` before every decode."""

    def decode(self, buf: Any, out: Any = None) -> Any:
        check_blosc_length(buf)
        return super().decode(buf, out)


def checked(codec: Any) -> Any:
    """`codec` itself, or its checked twin when it is numcodecs' plain Blosc."""
    if type(codec) is not Blosc:
        return codec
    config = dict(codec.get_config())
    config.pop("id", None)
    return CheckedBlosc(**config)


class CheckedBloscCodec(BloscCodec):
    """zarr's Zarr v3 Blosc codec with `check_blosc_length` before every decode."""

    def _decode_sync(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
        check_blosc_length(chunk_bytes.as_numpy_array())
        return super()._decode_sync(chunk_bytes, chunk_spec)


def checked_codecs(codecs: tuple[Any, ...]) -> tuple[Any, ...]:
    """A Zarr v3 codec chain with every plain Blosc codec, in shards too, checked."""
    out = []
    for codec in codecs:
        if type(codec) is BloscCodec:
            codec = CheckedBloscCodec.from_dict(codec.to_dict())
        elif isinstance(codec, ShardingCodec):
            codec = dataclasses.replace(
                codec,
                codecs=checked_codecs(codec.codecs),
                index_codecs=checked_codecs(codec.index_codecs),
            )
        out.append(codec)
    return tuple(out)
