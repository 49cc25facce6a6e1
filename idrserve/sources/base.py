"""The contract every pixel source keeps; callers never look past it."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from idrserve import errors
from idrserve.model import ImageMeta, Selection


@runtime_checkable
class PixelSource(Protocol):
    """An async reader of image metadata and raw pixel regions.

    `meta` raises `errors.NotFound` for an unknown image. `read` returns an array shaped
    ``(len(sel.channels), sel.z_stop - sel.z_start, sel.box.h, sel.box.w)`` in the image's
    native-endian dtype; it never blocks the event loop.
    """

    name: ClassVar[str]

    async def meta(self, image_id: int) -> ImageMeta: ...

    async def read(self, image_id: int, sel: Selection) -> np.ndarray: ...

    async def aclose(self) -> None: ...

    def sync_reader(self, image_id: int, sel: Selection) -> Callable[[], np.ndarray] | None:
        """Capability: a blocking read the caller may run in its own worker thread, or None."""
        ...

    def fresh_data_version(self, image_id: int) -> str | None:
        """Capability: the loaded image's data version if still trusted, else None."""
        ...

    def fresh_meta(self, image_id: int) -> ImageMeta | None:
        """Capability: the loaded image's metadata if still trusted, else None (no I/O)."""
        ...


async def resolve_source(source: PixelSource, image_id: int) -> PixelSource:
    """The concrete source that serves `image_id`.

    A routing source (Zarr for converted images, OMERO for the rest) exposes
    ``async source_for(image_id)``; layers that need a capability of one kind of source (e.g.
    passing stored Zarr chunks through unchanged) ask here instead of type-checking the router.
    """
    pick = getattr(source, "source_for", None)
    if pick is None:
        return source
    chosen: PixelSource = await pick(image_id)
    return chosen


def check_selection(meta: ImageMeta, sel: Selection) -> None:
    """Defensive bounds check every source runs before reading (callers validate first with
    the HTTP-facing messages); out of range is a NotFound."""
    problem = None
    if not 0 <= sel.level < len(meta.levels):
        problem = f"level {sel.level} not in 0..{len(meta.levels) - 1}"
    elif not 0 <= sel.t < meta.size_t:
        problem = f"t {sel.t} not in 0..{meta.size_t - 1}"
    elif not 0 <= sel.z_start < sel.z_stop <= meta.size_z:
        problem = f"z {sel.z_start}..{sel.z_stop} not within 0..{meta.size_z}"
    elif not sel.channels or any(not 0 <= c < meta.size_c for c in sel.channels):
        problem = f"channels {sel.channels} not within 0..{meta.size_c - 1}"
    else:
        lv, b = meta.levels[sel.level], sel.box
        if (
            b.x < 0
            or b.y < 0
            or b.w < 1
            or b.h < 1
            or b.x + b.w > lv.size_x
            or b.y + b.h > lv.size_y
        ):
            problem = f"box {b} outside level {sel.level} ({lv.size_x}x{lv.size_y})"
    if problem:
        raise errors.NotFound(f"image {meta.image_id}: {problem}")
