"""`OmeroSource`: images read from OMERO through the OMERO reader worker.

omero-py needs zeroc-ice 3.6, which does not install on the Python this server runs on, so the
Ice calls live in a worker process (`idrserve/omero_worker/`, run with the Python 3.10 venv of
`scripts/setup_omero.sh`, or any interpreter where omero-py imports). This side speaks plain
HTTP to it over loopback (or a Unix socket) and keeps the server's contract:

- `meta` turns the worker's OMERO facts into the same `ImageMeta` the Zarr source builds: the
  owner's saved rendering settings become the default rendering, missing ones fall back to the
  rendering engine's own defaults (docs/rendering.md#default-settings-without-an-omero-block),
  levels are listed full resolution first. Cached for `omero.metadata_ttl_s`, loaded once for
  concurrent first requests.
- `read` assembles a selection from OMERO tiles aligned to the image's tile grid, so a viewer's
  tile is exactly one `getTile` per channel and plane. The big-endian bytes become the native
  dtype here. Identical tile reads in flight share one call (single flight), and recently read
  raw tiles are kept (`omero.tile_cache_bytes`), so re-rendering never asks OMERO again.
- At most `omero.max_concurrent_calls` requests are in flight to the worker (which enforces the
  same cap on Ice calls); every call has the `omero.call_timeout_s` deadline. A worker or OMERO
  outage is `SourceUnavailable` (503 + Retry-After) for OMERO images only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import numpy as np

from idrserve import errors
from idrserve.flight import SingleFlight
from idrserve.lru import BoundedLRU
from idrserve.model import (
    ChannelMeta,
    ColorModel,
    Family,
    ImageMeta,
    LevelMeta,
    Selection,
)
from idrserve.settings import OmeroSettings
from idrserve.sources.base import check_selection
from idrserve.sources.metrics import OmeroCollector, OmeroGauges, OmeroStats
from idrserve.sources.ngff import dtype_range, palette

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# OMERO pixel type -> numpy dtype of the pixels (native order; OMERO sends big-endian).
OMERO_DTYPES: dict[str, str] = {
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "float": "float32",
    "double": "float64",
}
# Window bounds the rendering engine uses when a channel has no statistics (float/double's
# pixel_range in docs/webgateway.md#imgdata).
_FLOAT_RANGE = (-2147483648.0, 2147483647.0)
_FAMILIES = {f.value: f for f in Family}


# ---- OMERO facts -> ImageMeta -----------------------------------------------------------------


def _label(ch: dict[str, Any], index: int) -> str:
    """Channel name, else emission wavelength (int if integral), else the index.

    OMERO.web's rule for imgData's channel `label` (docs/webgateway.md#imgdata).
    """
    name = ch.get("name")
    if name:
        return str(name)
    wave = ch.get("emissionWave")
    if isinstance(wave, int | float):
        return str(int(wave)) if float(wave).is_integer() else str(wave)
    return str(index)


def _rgba(value: Any) -> tuple[int, int, int, int] | None:
    if isinstance(value, list) and len(value) == 4 and all(isinstance(v, int) for v in value):
        r, g, b, a = value
        return (r, g, b, a)
    return None


def facts_to_meta(facts: dict[str, Any], image_id: int) -> ImageMeta:
    """The worker's JSON facts as the `ImageMeta` every endpoint uses.

    Raises `errors.SourceError` for facts idrserve cannot serve (e.g. `bit` pixels).
    """
    ptype = str(facts.get("pixelsType"))
    dtype_name = OMERO_DTYPES.get(ptype)
    if dtype_name is None:
        raise errors.SourceError(f"image {image_id}: OMERO pixel type {ptype!r} not supported")
    dtype = np.dtype(dtype_name)
    size_c, size_z, size_t = int(facts["sizeC"]), int(facts["sizeZ"]), int(facts["sizeT"])
    tile_w, tile_h = (int(v) for v in facts["tileSize"])
    # The tile size OMERO reports per level (else the full-resolution one for all): reads
    # align to that grid, so a viewer's tile is one getTile per channel.
    tiles = facts.get("tileSizes") or [[tile_w, tile_h]] * len(facts["levels"])
    levels = tuple(
        LevelMeta(size_x=int(w), size_y=int(h), tile_x=int(tw), tile_y=int(th))
        for (w, h), (tw, th) in zip(facts["levels"], tiles, strict=True)
    )
    span = dtype_range(dtype) or _FLOAT_RANGE
    rdef = facts.get("rdef")
    bindings: list[dict[str, Any]] = list(rdef["channels"]) if rdef else []
    colours = palette(size_c)
    raw_channels: list[dict[str, Any]] = list(facts.get("channels") or [])
    channels = []
    for c in range(size_c):
        ch = raw_channels[c] if c < len(raw_channels) else {}
        lo, hi = ch.get("statsMin"), ch.get("statsMax")
        window = (float(lo), float(hi)) if lo is not None and hi is not None else span
        cb = bindings[c] if c < len(bindings) else None
        if cb is not None:
            start, end = float(cb["start"]), float(cb["end"])
            colour = _rgba(cb.get("color")) or _rgba(ch.get("color")) or colours[c]
            active = bool(cb["active"])
            family = _FAMILIES.get(str(cb.get("family")), Family.LINEAR)
            coefficient = float(cb.get("coefficient") or 1.0)
            inverted = bool(cb.get("inverted"))
            lut = cb.get("lut") or None
        else:  # the rendering engine's defaults (resetDefaults): stats window, first 3 on
            start, end = window
            colour = _rgba(ch.get("color")) or colours[c]
            active, family, coefficient, inverted, lut = c < 3, Family.LINEAR, 1.0, False, None
        wave = ch.get("emissionWave")
        channels.append(
            ChannelMeta(
                label=_label(ch, c),
                color=colour,
                window_min=window[0],
                window_max=window[1],
                start=start,
                end=end,
                active=active,
                family=family,
                coefficient=coefficient,
                inverted=inverted,
                lut=lut,
                emission_wave=float(wave) if isinstance(wave, int | float) else None,
            )
        )
    model_name = rdef.get("model") if rdef else None
    if model_name is not None:
        model = ColorModel.GREYSCALE if model_name == "greyscale" else ColorModel.COLOR
    else:
        model = ColorModel.COLOR if 1 < size_c < 8 else ColorModel.GREYSCALE
    default_z = rdef.get("defaultZ") if rdef else None
    default_t = rdef.get("defaultT") if rdef else None
    phys = facts.get("physicalSize") or {}
    # The data version changes with anything that changes rendered bytes: pixels set, saved
    # settings, sizes. A digest of the facts covers them all.
    digest = hashlib.blake2b(json.dumps(facts, sort_keys=True).encode(), digest_size=6).hexdigest()
    return ImageMeta(
        image_id=image_id,
        name=str(facts.get("name") or ""),
        dtype=dtype.name,
        size_x=int(facts["sizeX"]),
        size_y=int(facts["sizeY"]),
        size_z=size_z,
        size_c=size_c,
        size_t=size_t,
        levels=levels,
        channels=tuple(channels),
        default_z=default_z
        if isinstance(default_z, int) and 0 <= default_z < size_z
        else size_z // 2,
        default_t=default_t if isinstance(default_t, int) and 0 <= default_t < size_t else 0,
        default_model=model,
        pixel_size=(phys.get("x"), phys.get("y"), phys.get("z")),
        data_version=f"omero-{digest}",
        description=str(facts.get("description") or ""),
        source_format="OMERO",
    )


NGFF_ENTITY = "com.glencoesoftware.ngff:multiscales"


def ngff_location(facts: dict[str, Any]) -> str | None:
    """The OME-Zarr image group of an NGFF-backed OMERO image, as idrserve opens locations.

    omero-zarr-pixel-buffer links such images with an ExternalInfo whose `lsid` is a path or
    `s3://<endpoint>/<bucket>/<prefix>`; an endpoint host (it has a dot or a port) becomes an
    https:// URL, a plain `s3://bucket/prefix` keeps using the source's S3 settings.
    """
    info = facts.get("externalInfo")
    if not isinstance(info, dict) or info.get("entityType") != NGFF_ENTITY:
        return None
    lsid = str(info.get("lsid") or "").strip()
    if not lsid:
        return None
    if lsid.startswith("s3://"):
        host, _, rest = lsid[len("s3://") :].partition("/")
        if ("." in host or ":" in host) and rest:
            return f"https://{host}/{rest}"
    return lsid


# ---- the worker process -----------------------------------------------------------------------


def default_worker_python(settings: OmeroSettings) -> Path:
    """The interpreter for a spawned worker (see `OmeroSettings.worker_python`)."""
    if settings.worker_python is not None:
        return settings.worker_python
    if importlib.util.find_spec("omero") is not None and importlib.util.find_spec("Ice"):
        return Path(sys.executable)
    venv = os.environ.get("IDRSERVE_OMERO_VENV")
    candidates = [Path(venv)] if venv else []
    candidates += [Path.cwd() / ".venv-omero", Path(__file__).resolve().parents[2] / ".venv-omero"]
    for candidate in candidates:
        python = candidate / "bin" / "python"
        if python.exists():
            return python
    raise errors.SourceError(
        "the OMERO reader worker cannot start",
        internal="OMERO is configured but no interpreter with omero-py was found: run "
        "scripts/setup_omero.sh or set omero.worker_python / omero.worker_url",
    )


def worker_command(settings: OmeroSettings, python: Path, listen: str) -> list[str]:
    """The command line of a worker for `settings` (the password goes in the environment)."""
    return [
        str(python),
        "-m",
        "idrserve.omero_worker",
        "--host",
        str(settings.host),
        "--port",
        str(settings.port),
        "--user",
        settings.user,
        "--listen",
        listen,
        "--sessions",
        str(settings.session_pool_size),
        "--threads",
        str(settings.thread_pool_size),
        "--max-calls",
        str(settings.max_concurrent_calls),
        "--call-timeout",
        str(settings.call_timeout_s),
        "--meta-ttl",
        str(settings.metadata_ttl_s),
        "--keepalive",
        str(settings.keepalive_s),
    ]


def worker_env(settings: OmeroSettings) -> dict[str, str]:
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["IDRSERVE_OMERO_PASSWORD"] = settings.password.get_secret_value()
    return env


class WorkerProcess:
    """A worker spawned as this process's child; restarted if it dies."""

    def __init__(self, settings: OmeroSettings) -> None:
        self._settings = settings
        self._proc: asyncio.subprocess.Process | None = None
        self.url: str | None = None
        self._lock = asyncio.Lock()
        self._started_at = 0.0

    async def ensure(self) -> str:
        """The worker's URL, (re)starting it when it is not running."""
        if self._proc is not None and self._proc.returncode is None and self.url:
            return self.url
        async with self._lock:
            if self._proc is not None and self._proc.returncode is None and self.url:
                return self.url
            if time.monotonic() - self._started_at < 1.0:
                raise errors.SourceUnavailable("OMERO reader worker restarting")
            self._started_at = time.monotonic()
            self.url = await self._start()
            return self.url

    async def _start(self) -> str:
        python = default_worker_python(self._settings)
        cmd = worker_command(self._settings, python, "127.0.0.1:0")
        cmd += ["--parent-pid", str(os.getpid())]
        log.info("starting OMERO reader worker: %s", " ".join(cmd))
        self._proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, env=worker_env(self._settings)
        )
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                while True:
                    line = await self._proc.stdout.readline()
                    if not line:
                        raise errors.SourceUnavailable("OMERO reader worker exited at start")
                    text = line.decode(errors="replace").strip()
                    if text.startswith("LISTENING "):
                        return text.split(" ", 1)[1]
        except TimeoutError:
            await self.aclose()
            raise errors.SourceUnavailable("OMERO reader worker did not start") from None

    async def aclose(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


# ---- the source -------------------------------------------------------------------------------


@dataclass(slots=True)
class _MetaEntry:
    meta: ImageMeta
    ngff: str | None = None  # where OMERO says the image's OME-Zarr is (ExternalInfo)


TileKey = tuple[int, str, int, int, int, int, int, int]  # id, version, level, z, c, t, col, row


def _tile_cost(_key: TileKey, tile: np.ndarray) -> int:
    return tile.nbytes


class OmeroSource:
    """Reads images from OMERO through the reader worker; see the module docstring."""

    name: ClassVar[str] = "omero"

    def __init__(self, settings: OmeroSettings) -> None:
        self._settings = settings
        self._worker = None if settings.worker_url else WorkerProcess(settings)
        self._session: aiohttp.ClientSession | None = None
        self._sem = asyncio.Semaphore(settings.max_concurrent_calls)
        self._meta: BoundedLRU[int, _MetaEntry] = BoundedLRU(
            settings.meta_cache_entries, ttl_s=settings.metadata_ttl_s
        )
        self._tiles: BoundedLRU[TileKey, np.ndarray] = BoundedLRU(
            max_bytes=settings.tile_cache_bytes, cost=_tile_cost
        )
        # Loads run on when their callers leave: what they fetch is kept.
        self._meta_loading: SingleFlight[int, _MetaEntry] = SingleFlight(
            "omero-meta", cancel_abandoned=False
        )
        self._tiles_loading: SingleFlight[TileKey, np.ndarray] = SingleFlight(
            "omero-tile", cancel_abandoned=False
        )
        # Counters for /metrics (see `collectors`), tests and the benchmark.
        self.call_stats = OmeroStats()
        # Monotonic times of the last answered call and of the last outage seen (with its
        # public and internal details), for /readyz.
        self._last_ok = 0.0
        self._last_outage: tuple[float, str, str] | None = None

    @property
    def stats(self) -> dict[str, int]:
        """The headline counters: calls made (whatever their result), tile cache hits, and
        tile reads that joined one in flight."""
        s = self.call_stats
        return {
            "meta_calls": s.total("meta"),
            "tile_calls": s.total("tile"),
            "tile_hits": s.tile_hits,
            "coalesced": s.coalesced,
        }

    def collectors(self) -> list[Collector]:
        """The `idrserve_omero_*` metrics, for the app's registry."""

        def gauges() -> OmeroGauges:
            return OmeroGauges(
                max_concurrent_calls=self._settings.max_concurrent_calls,
                tile_cache_bytes=self._tiles.bytes,
                tile_cache_entries=len(self._tiles),
                metadata_entries=len(self._meta),
            )

        return [OmeroCollector(self.call_stats, gauges)]

    async def health(self) -> dict[str, Any]:
        """For /readyz: is the reader worker up, and did the last OMERO call succeed?

        Never calls OMERO itself (a readiness probe must not add load to it): "down" when the
        worker does not answer, "degraded" when the most recent call ended in an outage.
        `host` and `internal` (the exception or the worker's own words) are shown by /readyz
        only with `server.expose_internals`.
        """
        out: dict[str, Any] = {"kind": "omero", "host": self._settings.host}
        try:
            session, base = await self._client()
            async with asyncio.timeout(2.0), session.get(base + "/stats") as resp:
                out["worker"] = await resp.json() if resp.status == 200 else resp.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, errors.IdrServeError) as e:
            internal = str(e) if isinstance(e, errors.IdrServeError) else repr(e)
            return out | {
                "status": "down",
                "detail": "the OMERO reader worker does not answer",
                "internal": errors.redact_credentials(internal)[:300],
            }
        outage = self._last_outage
        if outage is not None and outage[0] > self._last_ok:
            return out | {"status": "degraded", "detail": outage[1], "internal": outage[2][:300]}
        return out | {"status": "ok"}

    # ---- contract --------------------------------------------------------------------------

    async def meta(self, image_id: int) -> ImageMeta:
        return (await self._meta_entry(image_id)).meta

    async def read(self, image_id: int, sel: Selection) -> np.ndarray:
        meta = await self.meta(image_id)
        check_selection(meta, sel)
        level = meta.levels[sel.level]
        tw, th = level.tile_x, level.tile_y
        b = sel.box
        out = np.empty((len(sel.channels), sel.z_stop - sel.z_start, b.h, b.w), dtype=meta.dtype)
        jobs: list[Awaitable[None]] = []
        for row in range(b.y // th, (b.y + b.h - 1) // th + 1):
            for col in range(b.x // tw, (b.x + b.w - 1) // tw + 1):
                for ci, c in enumerate(sel.channels):
                    for zi, z in enumerate(range(sel.z_start, sel.z_stop)):
                        jobs.append(self._paste(out, ci, zi, meta, sel, z, c, col, row))
        await asyncio.gather(*jobs)
        return out

    def sync_reader(self, image_id: int, sel: Selection) -> Callable[[], np.ndarray] | None:
        return None  # every read goes through the worker, asynchronously

    async def ngff_location(self, image_id: int) -> str | None:
        """The OME-Zarr location OMERO records for an NGFF-backed image (docs/omero.md), or None."""
        return (await self._meta_entry(image_id)).ngff

    def fresh_meta(self, image_id: int) -> ImageMeta | None:
        entry = self._meta.peek(image_id)
        return None if entry is None else entry.meta

    def fresh_data_version(self, image_id: int) -> str | None:
        entry = self._meta.peek(image_id)
        return None if entry is None else entry.meta.data_version

    async def aclose(self) -> None:
        await self._meta_loading.aclose()
        await self._tiles_loading.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._worker is not None:
            await self._worker.aclose()

    # ---- metadata --------------------------------------------------------------------------

    async def _meta_entry(self, image_id: int) -> _MetaEntry:
        """The image's cached metadata, or one load shared by concurrent callers."""
        entry = self._meta.get(image_id)
        if entry is None:
            entry, _ = await self._meta_loading.run(image_id, partial(self._load_meta, image_id))
        return entry

    async def _load_meta(self, image_id: int) -> _MetaEntry:
        body = await self._get("meta", image_id, f"/image/{image_id}")
        try:
            facts = json.loads(body)
            meta = facts_to_meta(facts, image_id)
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.SourceError(
                f"image {image_id}: bad metadata from OMERO",
                internal=f"{type(exc).__name__}: {exc}"[:500],
            ) from exc
        entry = _MetaEntry(meta, ngff_location(facts))
        self._meta.put(image_id, entry)
        return entry

    # ---- pixels ----------------------------------------------------------------------------

    async def _paste(
        self,
        out: np.ndarray,
        ci: int,
        zi: int,
        meta: ImageMeta,
        sel: Selection,
        z: int,
        c: int,
        col: int,
        row: int,
    ) -> None:
        tile = await self._tile(meta, sel.level, z, c, sel.t, col, row)
        level = meta.levels[sel.level]
        x0, y0 = col * level.tile_x, row * level.tile_y
        b = sel.box
        ix0, iy0 = max(b.x, x0), max(b.y, y0)
        ix1 = min(b.x + b.w, x0 + tile.shape[1])
        iy1 = min(b.y + b.h, y0 + tile.shape[0])
        out[ci, zi, iy0 - b.y : iy1 - b.y, ix0 - b.x : ix1 - b.x] = tile[
            iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0
        ]

    async def _tile(
        self, meta: ImageMeta, level: int, z: int, c: int, t: int, col: int, row: int
    ) -> np.ndarray:
        key: TileKey = (meta.image_id, meta.data_version, level, z, c, t, col, row)
        cached = self._tiles.get(key)
        if cached is not None:
            self.call_stats.tile_hits += 1
            return cached
        tile, joined = await self._tiles_loading.run(key, partial(self._fetch_tile, meta, key))
        self.call_stats.coalesced += joined
        return tile

    async def _fetch_tile(self, meta: ImageMeta, key: TileKey) -> np.ndarray:
        image_id, _, level, z, c, t, col, row = key
        lm = meta.levels[level]
        x, y = col * lm.tile_x, row * lm.tile_y
        w, h = min(lm.tile_x, lm.size_x - x), min(lm.tile_y, lm.size_y - y)
        body = await self._get(
            "tile", image_id, f"/tile/{image_id}/{z}/{c}/{t}?level={level}&x={x}&y={y}&w={w}&h={h}"
        )
        big = np.dtype(meta.dtype).newbyteorder(">")
        expected = w * h * big.itemsize
        if len(body) != expected:
            raise errors.SourceError(
                f"image {image_id}: OMERO tile of {len(body)} bytes, expected {expected}"
            )
        tile = np.frombuffer(body, dtype=big).reshape(h, w).astype(meta.dtype)
        self._tiles.put(key, tile)  # refused when over the whole budget (or it is 0)
        return tile

    # ---- worker calls ----------------------------------------------------------------------

    async def _client(self) -> tuple[aiohttp.ClientSession, str]:
        url = self._settings.worker_url
        if self._worker is not None:
            url = await self._worker.ensure()
        assert url is not None
        if self._session is None:
            connector: aiohttp.BaseConnector
            if url.startswith("unix:"):
                connector = aiohttp.UnixConnector(path=url[len("unix:") :])
            else:
                connector = aiohttp.TCPConnector(limit=0, force_close=False)
            self._session = aiohttp.ClientSession(connector=connector)
        base = "http://worker" if url.startswith("unix:") else url.rstrip("/")
        return self._session, base

    async def _get(self, call: str, image_id: int, path: str) -> bytes:
        """GET from the worker under the global cap and the call deadline. `call` ("meta" or
        "tile") labels the metrics; every call records one result, and its duration once it
        had a slot (a cancelled call counts as "error").

        Errors name the image and the kind of fault; the worker's own words (which may quote
        OMERO's exceptions, hosts and ports) are only `internal`, for the log."""
        stats, timeout = self.call_stats, self._settings.call_timeout_s
        result, started = "error", None
        try:
            stats.waiting += 1
            try:
                await self._sem.acquire()
            finally:
                stats.waiting -= 1
            stats.in_flight += 1
            started = time.perf_counter()
            try:
                session, base = await self._client()
                headers = {"X-Deadline-Ms": str(int(timeout * 1000))}
                async with asyncio.timeout(timeout + 1.0):
                    async with session.get(base + path, headers=headers) as resp:
                        body = await resp.read()
                        status = resp.status
            except errors.SourceUnavailable as exc:  # the spawned worker did not start
                result = "unavailable"
                exc.retry_after_s = self._settings.retry_after_s
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                result = "unavailable"
                raise self._unavailable(
                    image_id,
                    "the OMERO reader worker is unreachable",
                    f"{type(exc).__name__}: {exc}",
                ) from exc
            finally:
                stats.in_flight -= 1
                self._sem.release()
            if status == 200:
                result = "ok"
                self._last_ok = time.monotonic()
                return body
            detail = _detail(body)
            if status == 404:
                result = "not_found"
                raise errors.NotFound(
                    f"image {image_id} not found", param="image_id", internal=f"OMERO: {detail}"
                )
            if status == 503:
                result = "unavailable"
                raise self._unavailable(
                    image_id,
                    _outage_kind(detail),
                    f"OMERO reader worker: {detail}",
                    _retry_after(body),
                )
            raise errors.SourceError(
                f"image {image_id}: the OMERO read failed",
                internal=f"OMERO reader worker answered {status}: {detail}",
            )
        finally:
            stats.record(call, result, None if started is None else time.perf_counter() - started)

    def _unavailable(
        self, image_id: int, kind: str, internal: str, retry_after: float | None = None
    ) -> errors.SourceUnavailable:
        """A 503 for `image_id` saying `kind` (public), remembered for /readyz."""
        exc = errors.SourceUnavailable(f"image {image_id}: {kind}", internal=internal)
        assert exc.internal is not None
        self._last_outage = (time.monotonic(), kind, exc.internal)
        exc.retry_after_s = max(self._settings.retry_after_s, int(retry_after or 0))
        return exc


# The worker's 503 details read "<kind>: <cause>" ("OMERO refused the login: <reason>",
# "OMERO unreachable: <Ice exception>"); the kind alone is safe to show.
_PLAIN_KIND = re.compile(r"[A-Za-z][A-Za-z ,'-]{0,79}")


def _outage_kind(detail: str) -> str:
    """The public part of a worker's outage detail: its kind, never the cause."""
    kind = detail.split(":", 1)[0].strip()
    if _PLAIN_KIND.fullmatch(kind) is None or "OMERO" not in kind:
        return "OMERO unavailable"
    return kind


def _detail(body: bytes) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("detail"))
    return body[:200].decode(errors="replace")


def _retry_after(body: bytes) -> float | None:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        value = json.loads(body).get("retry_after")
        return float(value) if value is not None else None
    return None
