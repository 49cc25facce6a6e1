"""The one pipeline every route uses: request → cache → source read → render → encode → cache.

HTTP handlers and benchmarks call `cached_render` (or `render_region` underneath it), so a tile
is produced and cached the same way whichever protocol asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import numpy as np

from idrserve.admission import CURRENT_SLOT, Admission
from idrserve.cache import CacheEntry, TieredCache, response_key
from idrserve.encode import encode
from idrserve.encode.jpeg import encode_jpeg_planes
from idrserve.errors import TooLarge
from idrserve.model import (
    MEDIA_TYPES,
    Format,
    HistogramRequest,
    ImageMeta,
    Projection,
    RegionRequest,
    Selection,
    Tone,
)
from idrserve.render import YccPlanes, render_rgb, render_ycc
from idrserve.render.histogram import bin_counts
from idrserve.render.lut import LutTable
from idrserve.render.project import project
from idrserve.render.resample import downsample_area, flip, resize_nearest, rotate, to_tone
from idrserve.settings import LimitSettings
from idrserve.sources.base import PixelSource
from idrserve.turns import InlineTurns

T = TypeVar("T")

# An inline render reading more raw pixels than this runs in two loop turns, read and decode
# first, then render and encode, so that no turn holds the loop much past a millisecond: a
# 3 × 512² tile takes about 2 ms in all, each part about 1 (docs/benchmarks.md).
ONE_TURN_PIXELS = 3 * 256 * 256


@dataclass(slots=True)
class Deps:
    """What the pipeline needs; built once per process by `app.create_app`."""

    source: PixelSource
    luts: LutTable
    limits: LimitSettings
    cpu_pool: Executor
    cache: TieredCache | None = None
    # Bounds renders in progress (admission.py); None: unbounded (benchmarks, tools).
    admission: Admission | None = None
    # Direct reads of at most this many raw pixels render inline (server.inline_render_pixels).
    inline_pixels: int = 0
    # Inline renders take turns, one per event-loop iteration (turns.py).
    inline_turns: InlineTurns = field(default_factory=InlineTurns)


@dataclass(slots=True)
class Rendered:
    body: bytes
    media_type: str
    key: str
    timings: dict[str, float] = field(default_factory=dict)
    # Which cache tier answered: memory, disk, redis, coalesced (waited for a concurrent
    # render), miss (rendered now) or off (no cache configured).
    tier: str = "off"


async def cache_key(req: RegionRequest | HistogramRequest, deps: Deps) -> tuple[str, int]:
    """The response's cache key (also its ETag) and the image's purge generation in it.

    The key joins the image, its purge generation and a digest of everything that changes the
    bytes (`RegionRequest.canonical`: settings, region, format, the image's data version and
    the render schema), never the URL.
    """
    digest = req.key()
    if deps.cache is None:
        return digest, 0
    generation = await deps.cache.generation(req.image_id)
    return response_key(req.image_id, generation, digest), generation


def fresh_cache_key(req: RegionRequest, deps: Deps) -> tuple[str, int] | None:
    """`cache_key` without I/O, for callers that cannot await (http/coldpath.py); None when
    the image's purge generation must be looked up first."""
    digest = req.key()
    if deps.cache is None:
        return digest, 0
    generation = deps.cache.fresh_generation(req.image_id)
    if generation is None:
        return None
    return response_key(req.image_id, generation, digest), generation


async def cached_render(req: RegionRequest, meta: ImageMeta, deps: Deps, key: str) -> Rendered:
    """Answer from the cheapest cache tier, or render once (single-flight) and store."""
    if deps.cache is None:
        rendered = await render_region(req, meta, deps, key)
        rendered.tier = "off"
        return rendered
    timings: dict[str, float] = {}

    async def render() -> CacheEntry:
        rendered = await render_region(req, meta, deps, key)
        timings.update(rendered.timings)
        return CacheEntry(rendered.body, rendered.media_type)

    t0 = time.perf_counter()
    entry, tier = await deps.cache.get_or_render(key, render)
    if tier not in ("miss",):
        timings["cache"] = time.perf_counter() - t0
    return Rendered(entry.body, entry.media_type, key, timings, tier)


# A render as plain calls: each returns the response, or the call that does the rest in a
# later loop turn.
Step = Callable[[], "Rendered | Step"]


def render_now(req: RegionRequest, meta: ImageMeta, deps: Deps, key: str) -> Rendered | Step | None:
    """The memory tier's entry for a tile, or its render as a plain call for when the loop
    gives it its turn; None when it must take the usual way (`cached_render`).

    A tile that `render_region` would render inline anyway, in a process whose cache needs no
    I/O to look a key up (memory only, or none), has nothing to wait for but its turn
    (turns.py): its single-flight task, cache-lookup coroutines and render-slot context only
    schedule callbacks around a synchronous render. The call returns the memory tier's entry
    if one has arrived meanwhile, else renders and stores as `cached_render` would. It needs
    no render slot (nothing else runs while it renders, and it cannot be cancelled) and no
    single flight (a request for the key that comes meanwhile waits for a turn behind it and
    finds its entry in the memory tier, if there is one; one already rendering it in a task
    makes this None, to be joined the usual way). Its exceptions are the render's. A render
    over `ONE_TURN_PIXELS` is two calls: the first reads and decodes and returns the second,
    which renders, encodes and stores in a later turn, ahead of every waiter; its request may
    go away in between, and the second is then never called.
    """
    cache = deps.cache
    if not _renders_without_io(cache, key):
        return None
    if cache is not None and cache.memory is not None:
        # A hit needs no turn: waiting for one held hits behind renders, a few per loop
        # iteration (docs/benchmarks.md#writing-responses-together).
        hit = cache.memory.get(key)
        if hit is not None:
            return Rendered(hit.body, hit.media_type, key, {}, "memory")
    found = _direct_read(req, meta, deps, deps.inline_pixels)
    if found is None:
        return None
    direct, pixels = found
    turns = deps.inline_turns

    def produce() -> Rendered | Step:
        memory = None if cache is None else cache.memory
        if memory is not None:
            entry = memory.get(key)
            if entry is not None:
                return Rendered(entry.body, entry.media_type, key, {}, "memory")
        if pixels > ONE_TURN_PIXELS:
            rest = _read_first(req, meta, deps, direct, key)
            return lambda: store_rendered(cache, rest())
        rendered = _read_render_encode(req, meta, deps, direct, key)
        turns.record(sum(rendered.timings.values()))
        return store_rendered(cache, rendered)

    return produce


def pool_job(
    req: RegionRequest, meta: ImageMeta, deps: Deps, key: str
) -> Callable[[], Rendered] | None:
    """A tile's read, render and encode as one plain call for the CPU pool, for a caller that
    waits for it without a task (http/coldpath.py); None when it must take the usual way
    (`cached_render`).

    The conditions are `render_now`'s without its inline bound: a process whose cache needs
    no I/O to look a key up, no render of the key under way in `cached_render`, a direct
    read. The call only reads and computes: the caller looks the memory tier up before and
    stores after, on the loop (the tiers are not thread-safe), and holds a render slot and
    the single flight for the key itself. Through `cached_render` the same render cost the
    loop 152 µs a request against 119 inline: its single-flight task and shield, the
    render-slot context and the wrapped future (docs/benchmarks.md).
    """
    if not _renders_without_io(deps.cache, key):
        return None
    found = _direct_read(req, meta, deps, None)
    if found is None:
        return None
    return partial(_read_render_encode, req, meta, deps, found[0], key)


def store_rendered(cache: TieredCache | None, rendered: Rendered) -> Rendered:
    """Store a render its caller made itself after a memory miss, as `cached_render` stores
    its own (tier "miss"; "off" with no cache)."""
    if cache is not None:
        cache.store_render(rendered.key, CacheEntry(rendered.body, rendered.media_type))
        rendered.tier = "miss"
    return rendered


def _renders_without_io(cache: TieredCache | None, key: str) -> bool:
    """No cache tier needs I/O before a render (memory only, or none) and `cached_render` is
    not rendering `key` now (a new request must join that one)."""
    return cache is None or (cache.local_only and not cache.rendering(key))


def _direct_read(
    req: RegionRequest, meta: ImageMeta, deps: Deps, max_pixels: int | None
) -> tuple[Callable[[], np.ndarray], int] | None:
    """The plain read of a tile's one plane and its raw pixel count, when the source has one
    and the tile needs nothing else (no projection, some channel, at most `max_pixels` raw
    pixels when given, within the read limit)."""
    if req.projection is not Projection.NORMAL:
        return None
    indices = req.render.active_indices()
    box = req.box
    pixels = len(indices) * box.w * box.h
    if not indices or (max_pixels is not None and pixels > max_pixels):
        return None
    sel = Selection(req.level, req.t, req.z, req.z + 1, indices, box)
    if read_bytes(meta, sel) > deps.limits.max_read_bytes:
        return None  # the usual path answers `TooLarge`
    direct = deps.source.sync_reader(req.image_id, sel)
    if direct is None:
        return None
    return direct, pixels


async def cached_histogram(req: HistogramRequest, deps: Deps, key: str) -> Rendered:
    """A histogram's JSON from the cheapest cache tier, or read and counted once (one render
    slot, counting in the CPU pool) and stored like a rendered tile."""
    timings: dict[str, float] = {}

    async def produce() -> CacheEntry:
        with render_slot(deps):
            sel = Selection(req.level, req.t, req.z, req.z + 1, (req.c,), req.box)
            t0 = time.perf_counter()
            stack = await deps.source.read(req.image_id, sel)
            t1 = time.perf_counter()
            body = await in_pool(deps.cpu_pool, partial(histogram_body, stack[0, 0], req))
            timings.update(source=t1 - t0, render=time.perf_counter() - t1)
        return CacheEntry(body, "application/json")

    if deps.cache is None:
        entry, tier = await produce(), "off"
    else:
        entry, tier = await deps.cache.get_or_render(key, produce)
    return Rendered(entry.body, entry.media_type, key, timings, tier)


def histogram_body(plane: np.ndarray, req: HistogramRequest) -> bytes:
    """`{"data": [count, …]}`, spaced as OMERO.web's JsonResponse writes it."""
    counts = bin_counts(plane, req.low, req.high, req.bins)
    return json.dumps({"data": counts.tolist()}, separators=(", ", ": ")).encode()


@contextlib.contextmanager
def render_slot(deps: Deps) -> Iterator[None]:
    """One of the process's render slots (503 `Overloaded` when none is free), for every
    route that reads and computes pixels, not only `render_region`."""
    if deps.admission is None:
        yield
        return
    with deps.admission.render():
        yield


async def in_pool(pool: Executor, fn: Callable[[], T]) -> T:
    """Run `fn` in the pool; if the caller is cancelled while it runs, the current render
    slot stays taken until the thread is done (admission.py), so the pool's queue stays
    bounded by the render limit even when deadlines expire or clients go away."""
    job = pool.submit(fn)
    try:
        return await asyncio.wrap_future(job)
    except asyncio.CancelledError:
        slot = CURRENT_SLOT.get()
        if slot is not None and not job.done():
            slot.hold_until(job)
        raise


def read_bytes(meta: ImageMeta, sel: Selection) -> int:
    n = len(sel.channels) * (sel.z_stop - sel.z_start) * sel.box.w * sel.box.h
    return n * np.dtype(meta.dtype).itemsize


async def render_region(
    req: RegionRequest, meta: ImageMeta, deps: Deps, key: str | None = None
) -> Rendered:
    """Read, render and encode one region; the caller has validated and clipped `req`.

    `key` is `req.key()` when the caller has already computed it (it costs microseconds).
    Takes one render slot of `deps.admission` (503 `Overloaded` at once when none is free).
    """
    if deps.admission is None:
        return await _render_region(req, meta, deps, key)
    with deps.admission.render():
        return await _render_region(req, meta, deps, key)


async def _render_region(
    req: RegionRequest, meta: ImageMeta, deps: Deps, key: str | None
) -> Rendered:
    timings: dict[str, float] = {}
    key = key or req.key()
    indices = req.render.active_indices()
    box = req.box
    if not indices:
        # No active channel: OMERO renders a black image of the requested size.
        raw = np.zeros((0, box.h, box.w), dtype=meta.dtype)
    else:
        if req.projection is Projection.NORMAL:
            z_start, z_stop = req.z, req.z + 1
        else:
            z_start, z_stop = req.proj_start, req.proj_end + 1
        sel = Selection(req.level, req.t, z_start, z_stop, indices, box)
        nbytes = read_bytes(meta, sel)
        if nbytes > deps.limits.max_read_bytes:
            raise TooLarge(
                f"the request needs {nbytes} bytes of raw pixels, over the limit of "
                f"{deps.limits.max_read_bytes}; use fewer channels, planes or a smaller region"
            )
        direct = deps.source.sync_reader(req.image_id, sel)
        if direct is not None and req.projection is Projection.NORMAL:
            if len(indices) * box.w * box.h <= deps.inline_pixels:
                # A small job on a one-core worker: no thread hand-off at all, but one
                # render per loop iteration so the loop stays responsive (turns.py).
                turns = deps.inline_turns
                await turns.turn()
                if len(indices) * box.w * box.h > ONE_TURN_PIXELS:
                    rest = _read_first(req, meta, deps, direct, key)
                    await turns.turn(first=True)  # the rest in a later turn, ahead of others
                    return rest()
                rendered = _read_render_encode(req, meta, deps, direct, key)
                turns.record(sum(rendered.timings.values()))
                return rendered
            # Read, render and encode in one executor job: each hop costs about as much as
            # encoding a small tile (bench/results/http-*.md).
            return await in_pool(
                deps.cpu_pool, partial(_read_render_encode, req, meta, deps, direct, key)
            )
        t0 = time.perf_counter()
        stack = await deps.source.read(req.image_id, sel)
        timings["source"] = time.perf_counter() - t0
        if req.projection is Projection.NORMAL:
            raw = stack[:, 0]
        else:
            kind = req.projection
            raw = await in_pool(deps.cpu_pool, lambda: project(stack, kind))

    body = await in_pool(deps.cpu_pool, partial(_render_encode, req, meta, deps, raw, timings))
    return Rendered(body, MEDIA_TYPES[req.fmt], key, timings)


def _render_encode(
    req: RegionRequest, meta: ImageMeta, deps: Deps, raw: np.ndarray, timings: dict[str, float]
) -> bytes:
    """Render and encode in one executor job; a hop costs about as much as a small encode."""
    t0 = time.perf_counter()
    if req.downsample != (1, 1):
        # A level the pyramid does not store: average raw values, then window them.
        raw = downsample_area(raw, req.downsample[0], req.downsample[1])
    planes = _as_jpeg_planes(req, meta, deps, raw)
    if planes is not None:
        t1 = time.perf_counter()
        body = encode_jpeg_planes(planes.y, planes.cb, planes.cr, req.quality)
        timings["render"] = t1 - t0
        timings["encode"] = time.perf_counter() - t1
        return body
    out = render_rgb(raw, req.render, meta.dtype, deps.luts)
    if req.pad != (0, 0):
        out = np.pad(out, ((0, req.pad[1]), (0, req.pad[0]), (0, 0)), mode="edge")
    if req.out_size is not None and (out.shape[1], out.shape[0]) != req.out_size:
        out = resize_nearest(out, req.out_size[0], req.out_size[1])
    if req.flip_h or req.flip_v:
        out = flip(out, req.flip_h, req.flip_v)
    if req.rotate:
        out = rotate(out, req.rotate)
    if req.tone is not Tone.DEFAULT:
        out = to_tone(out, req.tone is Tone.BITONAL)
    t1 = time.perf_counter()
    body = encode(out, req.fmt, req.quality)
    timings["render"] = t1 - t0
    timings["encode"] = time.perf_counter() - t1
    return body


def _as_jpeg_planes(
    req: RegionRequest, meta: ImageMeta, deps: Deps, raw: np.ndarray
) -> YccPlanes | None:
    """The JPEG's YCbCr planes when the render goes straight to the encoder (no step after
    it) and `render_ycc` reproduces its bytes; else None."""
    if (
        raw.shape[0] != 1  # several channels (or none): the RGB path, decided at once
        or req.fmt is not Format.JPEG
        or req.pad != (0, 0)
        or req.flip_h
        or req.flip_v
        or req.rotate
        or req.tone is not Tone.DEFAULT
        or (req.out_size is not None and req.out_size != (raw.shape[-1], raw.shape[-2]))
    ):
        return None
    return render_ycc(raw, req.render, meta.dtype, deps.luts)


def _read_render_encode(
    req: RegionRequest,
    meta: ImageMeta,
    deps: Deps,
    read: Callable[[], np.ndarray],
    key: str,
) -> Rendered:
    timings: dict[str, float] = {}
    raw = _read(read, timings)
    body = _render_encode(req, meta, deps, raw, timings)
    return Rendered(body, MEDIA_TYPES[req.fmt], key, timings)


def _read_first(
    req: RegionRequest,
    meta: ImageMeta,
    deps: Deps,
    read: Callable[[], np.ndarray],
    key: str,
) -> Callable[[], Rendered]:
    """The first of a render's two loop turns (`ONE_TURN_PIXELS`): read and decode now; the
    call returned renders and encodes in the next. Each part is timed for the turns."""
    turns = deps.inline_turns
    timings: dict[str, float] = {}
    raw = _read(read, timings)
    turns.record(timings["source"])

    def rest() -> Rendered:
        body = _render_encode(req, meta, deps, raw, timings)
        turns.record(timings["render"] + timings["encode"])
        return Rendered(body, MEDIA_TYPES[req.fmt], key, timings)

    return rest


def _read(read: Callable[[], np.ndarray], timings: dict[str, float]) -> np.ndarray:
    t0 = time.perf_counter()
    raw = read()[:, 0]
    timings["source"] = time.perf_counter() - t0
    return raw
