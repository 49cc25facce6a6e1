"""OMERO reader worker: pooled Ice sessions behind a tiny loopback HTTP API.

API (modelled on omero-ms-pixel-buffer's raw tile endpoint; every error is JSON
``{"error": code, "detail": text, "retry_after": s?}``):

- ``GET /healthz`` -> ``{"status": "ok", ...}`` (no OMERO call).
- ``GET /image/<id>`` -> plain JSON facts about the image as OMERO stores them: sizes, pixel
  type, channels (name, emission wave, colour, stats), physical sizes in micrometres, the
  owner's saved rendering settings, resolution levels (full resolution first) and tile size.
  Turning them into idrserve's `ImageMeta` happens in the server (`sources/omero.py`).
- ``GET /tile/<id>/<z>/<c>/<t>?level=&x=&y=&w=&h=`` -> the bytes of `RawPixelsStore.getTile`,
  unchanged (big-endian), with ``X-Pixels-Type``, ``X-Width`` and ``X-Height`` headers.
  ``level`` counts like idrserve and NGFF (0 = full resolution); OMERO's `setResolutionLevel`
  counts the other way (0 = smallest, docs/rendering.md#resolution-levels), converted here once.
- ``GET /stats`` -> call counters, for tests and benchmarks.

Protecting OMERO (issue: every call bounded, pooled and cached):

- ``--sessions`` logged-in sessions, created lazily, kept alive every ``--keepalive`` seconds
  and re-created when OMERO says they are gone (expired, server restarted): the failed call is
  retried once on a fresh session.
- ``--max-calls`` *lanes* (at most ``--threads``): a call must hold one, so no more than that
  many Ice calls are ever in flight to OMERO, however many HTTP requests arrive. A lane owns
  one stateful RawPixelsStore (kept open across tiles of the same pixels set, so a tile costs
  one `getTile`, not open/seek/close).
- Blocking Ice calls run in a ``--threads`` bounded thread pool, never in the HTTP threads.
- Every request has a deadline (``X-Deadline-Ms`` header, default ``--call-timeout``): lane
  waits, Ice invocation timeouts and the pool wait all respect it; past it the answer is 503.
- Image facts are cached for ``--meta-ttl`` seconds (the tile path needs the pixels id).

Python 3.10 and the standard library only (plus omero-py/zeroc-ice): see `__init__.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import Glacier2
import Ice
import omero
import omero.clients
import omero.model
import omero.sys
from omero.rtypes import unwrap

log = logging.getLogger("idrserve.omero_worker")

BYTES_PER_PIXEL = {
    "bit": 1,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "float": 4,
    "double": 8,
}

# One query loads everything the metadata needs; `omero.group: -1` searches every group the
# user can read (IDR's public user sees many).
IMAGE_QUERY = (
    "select i from Image i"
    " join fetch i.pixels p"
    " join fetch p.pixelsType"
    " left outer join fetch p.channels c"
    " left outer join fetch c.logicalChannel lc"
    " left outer join fetch c.statsInfo"
    " left outer join fetch i.details.externalInfo"
    " where i.id = :id"
)
ALL_GROUPS = {"omero.group": "-1"}


# ---- errors ------------------------------------------------------------------------------------


class WorkerError(Exception):
    """An answer with a status: the server maps 404/503/502 to its own error family."""

    status = 502
    code = "source_error"

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


class Unavailable(WorkerError):
    status = 503
    code = "source_unavailable"


class NotFoundError(WorkerError):
    status = 404
    code = "not_found"


class BadRequestError(WorkerError):
    status = 400
    code = "bad_request"


# The session is gone (expired, destroyed, server restarted): re-create it and retry once.
SESSION_GONE: tuple[type[BaseException], ...] = (
    Ice.ObjectNotExistException,
    Ice.ConnectionLostException,
    Ice.CloseConnectionException,
    Ice.CommunicatorDestroyedException,
    Glacier2.SessionNotExistException,
    omero.SessionException,
)
# OMERO cannot be reached at all: no point in retrying within this request.
UNREACHABLE: tuple[type[BaseException], ...] = (
    Ice.ConnectFailedException,
    Ice.DNSException,
    Ice.TimeoutException,
    Ice.SocketException,
)


# ---- configuration ----------------------------------------------------------------------------


@dataclass
class Config:
    host: str
    port: int
    user: str
    password: str
    sessions: int = 2
    threads: int = 8
    max_calls: int = 8
    call_timeout_s: float = 10.0
    meta_ttl_s: float = 300.0
    meta_entries: int = 4096
    keepalive_s: float = 60.0


# ---- sessions and lanes -----------------------------------------------------------------------


class Session:
    """One logged-in `omero.client`; `generation` tells lanes their cached services are stale."""

    def __init__(self, cfg: Config, generation: int) -> None:
        self.generation = generation
        self.client = omero.client(host=cfg.host, port=cfg.port)
        try:
            self.sf = self.client.createSession(cfg.user, cfg.password)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the session may already be gone
            self.client.closeSession()


class Lane:
    """A unit of allowed concurrency towards OMERO, with its own RawPixelsStore."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.generation = -1
        self.rps: Any = None
        self.pixels_id: int | None = None
        self.level: int | None = None

    def reset(self) -> None:
        rps, self.rps, self.pixels_id, self.level = self.rps, None, None, None
        if rps is not None:
            with contextlib.suppress(Exception):
                rps.close()


@dataclass
class Stats:
    calls: int = 0
    tile_calls: int = 0
    meta_loads: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    sessions_created: int = 0
    reconnects: int = 0
    errors: int = 0


class Pool:
    """Sessions, lanes, the bounded Ice thread pool and the metadata cache."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._sessions: list[Session | None] = [None] * cfg.sessions
        self._slot_locks = [threading.Lock() for _ in range(cfg.sessions)]
        self._generation = 0
        # A lane without a thread to run on would only hold an open RawPixelsStore: no more
        # lanes than Ice threads, so the thread pool is the ceiling of the configured cap.
        self._lanes: queue.Queue[Lane] = queue.Queue()
        for i in range(min(cfg.max_calls, cfg.threads)):
            self._lanes.put(Lane(i % cfg.sessions))
        self._executor = ThreadPoolExecutor(cfg.threads, thread_name_prefix="omero-ice")
        self._stats_lock = threading.Lock()
        self.stats = Stats()
        # Its own LRU and single flight, not idrserve.lru / idrserve.flight: those are for one
        # event loop, and this process is threaded and imports nothing from idrserve.
        self._meta: OrderedDict[int, tuple[float, dict[str, Any]]] = OrderedDict()
        self._meta_lock = threading.Lock()
        self._meta_loading: dict[int, threading.Lock] = {}
        self._stop = threading.Event()
        self._keepalive = threading.Thread(target=self._keep_alive, daemon=True)
        self._keepalive.start()

    # -- sessions --

    def _session(self, slot: int) -> Session:
        with self._slot_locks[slot]:
            sess = self._sessions[slot]
            if sess is None:
                self._generation += 1
                sess = Session(self.cfg, self._generation)
                self._sessions[slot] = sess
                with self._stats_lock:
                    self.stats.sessions_created += 1
                log.info("OMERO session %d created (slot %d)", sess.generation, slot)
            return sess

    def _invalidate(self, slot: int, sess: Session) -> None:
        with self._slot_locks[slot]:
            if self._sessions[slot] is sess:
                self._sessions[slot] = None
        # Other lanes may still be finishing a call on it: close it a little later.
        timer = threading.Timer(self.cfg.call_timeout_s, sess.close)
        timer.daemon = True
        timer.start()

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.cfg.keepalive_s):
            for slot in range(self.cfg.sessions):
                sess = self._sessions[slot]
                if sess is None:
                    continue
                try:
                    sess.sf.ice_invocationTimeout(int(self.cfg.call_timeout_s * 1000)).keepAlive(
                        None
                    )
                except Exception as exc:
                    log.warning("keepAlive failed (slot %d), session dropped: %s", slot, exc)
                    self._invalidate(slot, sess)

    def close(self) -> None:
        self._stop.set()
        self._executor.shutdown(wait=False)
        for slot, sess in enumerate(self._sessions):
            if sess is not None:
                self._sessions[slot] = None
                sess.close()

    # -- calls --

    @contextmanager
    def _counting(self, tile: bool) -> Iterator[None]:
        with self._stats_lock:
            self.stats.calls += 1
            self.stats.tile_calls += int(tile)
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            yield
        finally:
            with self._stats_lock:
                self.stats.in_flight -= 1

    def call(self, op: Callable[[Session, Lane, int], Any], deadline: float) -> Any:
        """Run `op(session, lane, timeout_ms)` on a lane in the Ice pool, within `deadline`."""
        try:
            lane = self._lanes.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise Unavailable("OMERO calls saturated past the deadline", 1.0) from None

        def job() -> Any:
            try:
                if time.monotonic() >= deadline:
                    raise Unavailable("deadline passed while queued for OMERO", 1.0)
                return self._run(lane, op, deadline)
            finally:
                self._lanes.put(lane)

        future = self._executor.submit(job)
        try:
            return future.result(timeout=max(0.001, deadline - time.monotonic()))
        except FutureTimeout:
            raise Unavailable("OMERO call exceeded its deadline", 1.0) from None

    def _run(self, lane: Lane, op: Callable[[Session, Lane, int], Any], deadline: float) -> Any:
        for attempt in (0, 1):
            timeout_ms = max(1, int((deadline - time.monotonic()) * 1000))
            try:
                sess = self._session(lane.slot)
            except Glacier2.PermissionDeniedException as exc:
                self._count_error()
                raise Unavailable(f"OMERO refused the login: {exc.reason}", 30.0) from None
            except (*SESSION_GONE, *UNREACHABLE) as exc:
                self._count_error()
                raise Unavailable(f"OMERO unreachable: {_describe(exc)}") from None
            if lane.generation != sess.generation:
                lane.reset()
                lane.generation = sess.generation
            try:
                return op(sess, lane, timeout_ms)
            except WorkerError:
                raise
            except Ice.InvocationTimeoutException:
                self._count_error()
                lane.reset()
                raise Unavailable("OMERO call exceeded its deadline", 1.0) from None
            except SESSION_GONE as exc:
                self._invalidate(lane.slot, sess)
                lane.reset()
                if attempt == 1 or time.monotonic() >= deadline:
                    self._count_error()
                    raise Unavailable(f"OMERO session lost: {_describe(exc)}") from None
                with self._stats_lock:
                    self.stats.reconnects += 1
                log.info("OMERO session lost (%s), reconnecting", _describe(exc))
            except UNREACHABLE as exc:
                self._invalidate(lane.slot, sess)
                lane.reset()
                self._count_error()
                raise Unavailable(f"OMERO unreachable: {_describe(exc)}") from None
            except omero.ConcurrencyException as exc:
                # e.g. MissingPyramidException: the pyramid is still being built.
                lane.reset()
                back_off = max(1.0, (exc.backOff or 0) / 1000.0)
                raise Unavailable(f"OMERO busy: {exc.message}", back_off) from None
            except omero.SecurityViolation as exc:
                raise NotFoundError(f"not readable: {exc.message}") from None
            except omero.ServerError as exc:
                lane.reset()
                self._count_error()
                raise WorkerError(f"OMERO error {type(exc).__name__}: {exc.message}") from None
            except Ice.Exception as exc:
                lane.reset()
                self._count_error()
                raise WorkerError(f"Ice error: {_describe(exc)}") from None
        raise AssertionError("unreachable")

    def _count_error(self) -> None:
        with self._stats_lock:
            self.stats.errors += 1

    # -- operations --

    def image(self, image_id: int, deadline: float) -> dict[str, Any]:
        """The image's facts, from the cache or loaded once for concurrent callers."""
        hit = self._cached_facts(image_id)
        if hit is not None:
            return hit
        with self._meta_lock:
            loading = self._meta_loading.setdefault(image_id, threading.Lock())
        # Single flight: one load per image; the others wait (within their deadline) for it.
        if not loading.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise Unavailable("OMERO metadata load still running past the deadline", 1.0)
        try:
            hit = self._cached_facts(image_id)
            if hit is not None:
                return hit
            facts = self.call(
                lambda s, lane, ms: _load_image(self, s, lane, ms, image_id), deadline
            )
            with self._meta_lock:
                self._meta[image_id] = (time.monotonic(), facts)
                while len(self._meta) > self.cfg.meta_entries:
                    self._meta.popitem(last=False)
            return facts
        finally:
            loading.release()
            with self._meta_lock:
                self._meta_loading.pop(image_id, None)

    def _cached_facts(self, image_id: int) -> dict[str, Any] | None:
        with self._meta_lock:
            hit = self._meta.get(image_id)
            if hit is not None and time.monotonic() - hit[0] < self.cfg.meta_ttl_s:
                self._meta.move_to_end(image_id)
                return hit[1]
        return None

    def tile(
        self,
        image_id: int,
        level: int,
        zct: tuple[int, int, int],
        box: tuple[int, int, int, int],
        deadline: float,
    ) -> tuple[bytes, str]:
        facts = self.image(image_id, deadline)
        levels = facts["levels"]
        if not 0 <= level < len(levels):
            raise BadRequestError(f"level {level} not in 0..{len(levels) - 1}")
        z, c, t = zct
        x, y, w, h = box
        size_x, size_y = levels[level]
        if not (0 <= z < facts["sizeZ"] and 0 <= c < facts["sizeC"] and 0 <= t < facts["sizeT"]):
            raise BadRequestError(f"plane z={z} c={c} t={t} outside the image")
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > size_x or y + h > size_y:
            raise BadRequestError(f"tile {box} outside level {level} ({size_x}x{size_y})")
        pixels_id = int(facts["pixelsId"])
        omero_level = len(levels) - 1 - level  # OMERO: 0 = smallest, n-1 = full resolution
        ptype = facts["pixelsType"]

        def op(sess: Session, lane: Lane, timeout_ms: int) -> bytes:
            rps = _rps_for(sess, lane, pixels_id, timeout_ms)
            if len(levels) > 1 and lane.level != omero_level:
                rps.setResolutionLevel(omero_level)
                lane.level = omero_level
            with self._counting(tile=True):
                data = rps.getTile(z, c, t, x, y, w, h)
            expected = w * h * BYTES_PER_PIXEL.get(ptype, 1)
            if len(data) != expected:
                raise WorkerError(f"getTile returned {len(data)} bytes, expected {expected}")
            return bytes(data)

        return self.call(op, deadline), ptype


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}{': ' + text[:200] if text else ''}"


def _rps_for(sess: Session, lane: Lane, pixels_id: int, timeout_ms: int) -> Any:
    """The lane's RawPixelsStore, opened on `pixels_id` (reused while it stays the same)."""
    if lane.rps is not None and lane.pixels_id == pixels_id:
        return lane.rps.ice_invocationTimeout(timeout_ms)
    lane.reset()
    rps = sess.sf.createRawPixelsStore(ALL_GROUPS)
    rps = omero.api.RawPixelsStorePrx.uncheckedCast(rps.ice_invocationTimeout(timeout_ms))
    rps.setPixelsId(pixels_id, False, ALL_GROUPS)
    lane.rps, lane.pixels_id, lane.level = rps, pixels_id, None
    return rps


def _load_image(
    pool: Pool, sess: Session, lane: Lane, timeout_ms: int, image_id: int
) -> dict[str, Any]:
    with pool._counting(tile=False):
        with pool._stats_lock:
            pool.stats.meta_loads += 1
        query = omero.api.IQueryPrx.uncheckedCast(
            sess.sf.getQueryService().ice_invocationTimeout(timeout_ms)
        )
        params = omero.sys.ParametersI()
        params.addId(image_id)
        img = query.findByQuery(IMAGE_QUERY, params, ALL_GROUPS)
        if img is None:
            raise NotFoundError(f"image {image_id} not found in OMERO")
        pixels = img.getPrimaryPixels()
        pixels_id = int(unwrap(pixels.getId()))
        owner_id = int(unwrap(img.getDetails().getOwner().getId()))
        service = omero.api.IPixelsPrx.uncheckedCast(
            sess.sf.getPixelsService().ice_invocationTimeout(timeout_ms)
        )
        # The owner's settings are the curated defaults every public viewer sees
        # (docs/webgateway.md#rendering-parameters).
        rdef = service.retrieveRndSettingsFor(pixels_id, owner_id, ALL_GROUPS)
        if rdef is not None and not rdef.isWaveRenderingLoaded():
            # Fully linked (channel bindings, families, codomain maps) in one more call.
            rdef = service.loadRndSettings(int(unwrap(rdef.getId())), ALL_GROUPS)
        rps = _rps_for(sess, lane, pixels_id, timeout_ms)
        n_levels = int(rps.getResolutionLevels())
        # Tile size per level (idrserve order, full resolution first): OMERO answers for the
        # current level, so walk them; a single-level image needs no level change.
        tiles: list[list[int]] = []
        for omero_level in range(n_levels - 1, -1, -1):
            if n_levels > 1:
                rps.setResolutionLevel(omero_level)
                lane.level = omero_level
            tiles.append([int(v) for v in rps.getTileSize()])
        descriptions = rps.getResolutionDescriptions() if n_levels > 1 else []
    return image_facts(img, rdef, descriptions, tiles, n_levels)


# ---- OMERO objects -> JSON facts ---------------------------------------------------------------


def _loaded(obj: Any) -> bool:
    return obj is not None and bool(obj.isLoaded())


def _micrometres(length: Any) -> float | None:
    if length is None:
        return None
    try:
        return float(omero.model.LengthI(length, "MICROMETER").getValue())
    except Exception:  # unit without a conversion (e.g. PIXEL): unknown
        return None


def _nanometres(length: Any) -> float | None:
    if length is None:
        return None
    try:
        return float(omero.model.LengthI(length, "NANOMETER").getValue())
    except Exception:
        return None


def _colour(obj: Any) -> list[int] | None:
    parts = [unwrap(obj.getRed()), unwrap(obj.getGreen()), unwrap(obj.getBlue())]
    if any(p is None for p in parts):
        return None
    alpha = unwrap(obj.getAlpha())
    return [int(p) for p in parts] + [255 if alpha is None else int(alpha)]


def image_facts(
    img: Any, rdef: Any, descriptions: list[Any], tiles: list[list[int]], n_levels: int
) -> dict[str, Any]:
    """Plain JSON from the loaded Image graph and RenderingDef (None if the owner has none)."""
    pixels = img.getPrimaryPixels()
    size_x, size_y = int(unwrap(pixels.getSizeX())), int(unwrap(pixels.getSizeY()))
    channels = []
    for ch in pixels.copyChannels():
        lc = ch.getLogicalChannel()
        stats = ch.getStatsInfo()
        channels.append(
            {
                "name": unwrap(lc.getName()) if _loaded(lc) else None,
                "emissionWave": _nanometres(lc.getEmissionWave()) if _loaded(lc) else None,
                "color": _colour(ch),
                "statsMin": unwrap(stats.getGlobalMin()) if _loaded(stats) else None,
                "statsMax": unwrap(stats.getGlobalMax()) if _loaded(stats) else None,
            }
        )
    levels = [[int(d.sizeX), int(d.sizeY)] for d in descriptions] or [[size_x, size_y]]
    if len(levels) != n_levels:
        levels = [[size_x, size_y]]
    external = None
    ext = img.getDetails().getExternalInfo()
    if _loaded(ext):
        external = {
            "entityType": unwrap(ext.getEntityType()),
            "entityId": unwrap(ext.getEntityId()),
            "lsid": unwrap(ext.getLsid()),
        }
    return {
        "id": int(unwrap(img.getId())),
        "name": unwrap(img.getName()) or "",
        "description": unwrap(img.getDescription()) or "",
        "ownerId": int(unwrap(img.getDetails().getOwner().getId())),
        "pixelsId": int(unwrap(pixels.getId())),
        "pixelsType": unwrap(pixels.getPixelsType().getValue()),
        "sizeX": size_x,
        "sizeY": size_y,
        "sizeZ": int(unwrap(pixels.getSizeZ())),
        "sizeC": int(unwrap(pixels.getSizeC())),
        "sizeT": int(unwrap(pixels.getSizeT())),
        "physicalSize": {
            "x": _micrometres(pixels.getPhysicalSizeX()),
            "y": _micrometres(pixels.getPhysicalSizeY()),
            "z": _micrometres(pixels.getPhysicalSizeZ()),
        },
        "levels": levels,
        "tileSize": tiles[0],
        "tileSizes": tiles if len(tiles) == len(levels) else [tiles[0]] * len(levels),
        "channels": channels,
        "rdef": _rdef_facts(rdef),
        "externalInfo": external,
    }


def _rdef_facts(rdef: Any) -> dict[str, Any] | None:
    if rdef is None:
        return None
    bindings = []
    for cb in rdef.copyWaveRendering():
        inverted = False
        maps = cb.copySpatialDomainEnhancement() if cb.isSpatialDomainEnhancementLoaded() else []
        for ctx in maps:
            if isinstance(ctx, omero.model.ReverseIntensityContext):
                inverted = bool(unwrap(ctx.getReverse()))
        family = cb.getFamily()
        bindings.append(
            {
                "active": bool(unwrap(cb.getActive())),
                "start": float(unwrap(cb.getInputStart())),
                "end": float(unwrap(cb.getInputEnd())),
                "color": _colour(cb),
                "family": unwrap(family.getValue()) if _loaded(family) else "linear",
                "coefficient": float(unwrap(cb.getCoefficient()) or 1.0),
                "lut": unwrap(cb.getLookupTable()) or None,
                "inverted": inverted,
            }
        )
    model = rdef.getModel()
    return {
        "id": unwrap(rdef.getId()),
        "version": unwrap(rdef.getVersion()),
        "model": unwrap(model.getValue()) if _loaded(model) else None,
        "defaultZ": unwrap(rdef.getDefaultZ()),
        "defaultT": unwrap(rdef.getDefaultT()),
        "channels": bindings,
    }


# ---- HTTP -------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: WorkerHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def address_string(self) -> str:
        return str(self.client_address[0]) if self.client_address else "unix"

    def do_GET(self) -> None:
        pool = self.server.pool
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        deadline_ms = self.headers.get("X-Deadline-Ms")
        timeout = float(deadline_ms) / 1000 if deadline_ms else pool.cfg.call_timeout_s
        deadline = time.monotonic() + min(timeout, pool.cfg.call_timeout_s)
        try:
            if parts == ["healthz"]:
                self._json(200, {"status": "ok", "sessions": pool.cfg.sessions})
            elif parts == ["stats"]:
                self._json(200, dict(pool.stats.__dict__))
            elif len(parts) == 2 and parts[0] == "image":
                self._json(200, pool.image(_int(parts[1], "image id"), deadline))
            elif len(parts) == 5 and parts[0] == "tile":
                image_id, z, c, t = (_int(p, "tile path") for p in parts[1:])
                box = tuple(_int(query.get(k), k) for k in ("x", "y", "w", "h"))
                level = _int(query.get("level", "0"), "level")
                data, ptype = pool.tile(image_id, level, (z, c, t), box, deadline)  # type: ignore[arg-type]
                self._send(
                    200,
                    data,
                    "application/octet-stream",
                    {"X-Pixels-Type": ptype, "X-Width": str(box[2]), "X-Height": str(box[3])},
                )
            else:
                raise NotFoundError(f"no such resource: {url.path}")
        except WorkerError as exc:
            self._json(exc.status, exc.body())
        except Exception as exc:
            log.exception("worker request %s failed", self.path)
            self._json(500, {"error": "internal_error", "detail": _describe(exc)})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", {})

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def _int(value: str | None, what: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise BadRequestError(f"{what}: expected an integer, got {value!r}") from None


class WorkerHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops connections in a burst (clients then wait
    # out a 1 s SYN retransmit): the server opens up to one connection per call in flight.
    request_queue_size = 1024
    pool: Pool

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (closed keep-alive connection) is not an error."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("client %s went away: %s", client_address, exc)
            return
        log.error("request from %s failed", client_address, exc_info=exc)


class UnixWorkerHTTPServer(WorkerHTTPServer):
    address_family = socket.AF_UNIX

    def server_bind(self) -> None:
        socket_path = str(self.server_address)
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        self.socket.bind(socket_path)
        self.server_name, self.server_port = "unix", 0


def make_server(listen: str, pool: Pool) -> tuple[WorkerHTTPServer, str]:
    """Bind `host:port` (port 0 = any) or `unix:/path`; returns the server and its URL."""
    server: WorkerHTTPServer
    if listen.startswith("unix:"):
        path = listen[len("unix:") :]
        server = UnixWorkerHTTPServer(path, Handler)  # type: ignore[arg-type]
        url = f"unix:{path}"
    else:
        host, _, port = listen.rpartition(":")
        server = WorkerHTTPServer((host or "127.0.0.1", int(port)), Handler)
        bound_host, bound_port = server.socket.getsockname()[:2]
        url = f"http://{bound_host}:{bound_port}"
    server.pool = pool
    return server, url


def _watch_parent(parent_pid: int, server: WorkerHTTPServer) -> None:
    """Exit with the server that spawned us, never outliving it as an orphan."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            log.info("parent %d gone, stopping", parent_pid)
            server.shutdown()
            return


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m idrserve.omero_worker", description=__doc__)
    # Defaults come from the server's own variables, so one env file serves both units.
    env = os.environ.get
    p.add_argument(
        "--host",
        default=env("IDRSERVE_OMERO__HOST"),
        required=not env("IDRSERVE_OMERO__HOST"),
        help="OMERO host (or tcp://, ssl://, wss:// URL); default $IDRSERVE_OMERO__HOST",
    )
    p.add_argument("--port", type=int, default=int(env("IDRSERVE_OMERO__PORT") or 4064))
    p.add_argument("--user", default=env("IDRSERVE_OMERO__USER") or "public")
    p.add_argument(
        "--listen", default="127.0.0.1:0", help="host:port or unix:/path (port 0: any free)"
    )
    p.add_argument("--sessions", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--max-calls", type=int, default=8)
    p.add_argument("--call-timeout", type=float, default=10.0)
    p.add_argument("--meta-ttl", type=float, default=300.0)
    p.add_argument("--keepalive", type=float, default=60.0)
    p.add_argument("--parent-pid", type=int, default=0)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s omero-worker %(levelname)s %(message)s",
    )
    # The password comes from the environment only: never on a command line that `ps` shows.
    password = env("IDRSERVE_OMERO_PASSWORD") or env("IDRSERVE_OMERO__PASSWORD") or "public"
    cfg = Config(
        host=args.host,
        port=args.port,
        user=args.user,
        password=password,
        sessions=max(1, args.sessions),
        threads=max(1, args.threads),
        max_calls=max(1, args.max_calls),
        call_timeout_s=args.call_timeout,
        meta_ttl_s=args.meta_ttl,
        keepalive_s=max(1.0, args.keepalive),
    )
    pool = Pool(cfg)
    server, url = make_server(args.listen, pool)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    if args.parent_pid:
        threading.Thread(target=_watch_parent, args=(args.parent_pid, server), daemon=True).start()
    log.info("serving OMERO %s:%s as %s on %s", cfg.host, cfg.port, cfg.user, url)
    print(f"LISTENING {url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        pool.close()
    return 0
