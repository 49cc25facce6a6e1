"""Cache values and keys: raw bytes plus a media type, never pickle."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One encoded response as it is stored in every tier."""

    body: bytes
    media_type: str


def response_key(image_id: int, generation: int, digest: str) -> str:
    """The tier-independent key of one rendered response.

    The image id comes first so that purge and stats can reason per image; integers never
    contain ':', so the mapping from (image_id, generation, digest) to the key is one-to-one.
    """
    return f"{image_id}:{generation}:{digest}"


def image_of_key(key: str) -> int | None:
    """The image id a `response_key` starts with, or None for any other string."""
    head, sep, _ = key.partition(":")
    if not sep:
        return None
    try:
        return int(head)
    except ValueError:
        return None


# Redis value layout: version byte, media-type length byte, media type (ASCII), body.
_VALUE_VERSION = 1


def pack_value(entry: CacheEntry) -> bytes:
    """The Redis value of an entry (a 2-byte header and the media type before the body)."""
    media = entry.media_type.encode("ascii")
    if len(media) > 255:
        raise ValueError(f"media type too long for the cache: {entry.media_type!r}")
    return bytes((_VALUE_VERSION, len(media))) + media + entry.body


def unpack_value(value: bytes) -> CacheEntry | None:
    """The entry packed by `pack_value`, or None when the value is not one."""
    if len(value) < 2 or value[0] != _VALUE_VERSION:
        return None
    end = 2 + value[1]
    if len(value) < end:
        return None
    try:
        media = value[2:end].decode("ascii")
    except UnicodeDecodeError:
        return None
    if not media:
        return None
    return CacheEntry(body=value[end:], media_type=media)
