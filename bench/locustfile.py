"""Locust load test for idrserve: realistic OMERO viewer sessions and thumbnail-grid browsing.

Two kinds of simulated users hit the host given on the command line (``--host``):

* ``ViewerUser`` (most users): opens an image like OMERO.iviewer does — ``imgData``, the
  thumbnail and the birds-eye view — then looks at the image: it fits it to a 1024×768 viewport,
  zooms in level by level around a few points of interest, pans to neighbouring tiles, scrolls
  through z (images with ``size.z > 1``) and switches a channel off and on again (a different
  ``c``). Tile URLs are computed from imgData (``levels``, ``resolutions``/``zoomLevelScaling``,
  ``tile_size``, ``size``, ``channels``) in iviewer ≥ 0.18's form: only the active channels in
  ``c``, one ``maps`` entry per active channel, no ``_=`` cache buster. A view's tiles are
  fetched six at a time, as a browser does over HTTP/1.1, and a tile already fetched in the
  session is not fetched again (the browser's cache). Images without tiles (``"tiles": false``)
  are shown as whole planes through ``render_image``.
* ``GridUser`` (a few): browses a thumbnail grid like the webclient: ``get_thumbnails`` in
  batches of up to 50 ids and ``/webclient/render_thumbnail/<id>/`` for single images.

Stats are grouped per route template (``name=``), so the report has one line per endpoint.
Every 5xx is a failure, and so is any other status that a correct server would not send for
these well-formed requests (the URLs are built from the server's own imgData, so a 404 means
the tile maths or the server is wrong).

Image ids: ``IDRSERVE_LOCUST_IMAGES`` — a comma-separated list (default
``1001,1002,1003,1004,1005,1006``, the ``idrserve demo`` set), or ``auto`` to take the list the
server gives at ``GET /`` (``{"images": [{"id": …}, …]}``); ``IDRSERVE_LOCUST_MAX_IMAGES``
(default 1000) caps a discovered list.

Running it
----------

Against a local demo (``idrserve demo`` in another terminal)::

    locust -f bench/locustfile.py --host http://127.0.0.1:8080            # web UI on :8089

Headless, for a bounded time, against staging (CSV files ``results/staging_stats.csv`` etc.)::

    IDRSERVE_LOCUST_IMAGES=auto locust -f bench/locustfile.py --headless \\
        -u 50 -r 10 -t 2m --host https://staging.example.org \\
        --csv results/staging --exit-code-on-error 1

The shape of a staging run (before every release):

1. Purge or note the state of the caches (``idrserve cache stats``); a first run with cold
   caches and a second one with warm caches tell different stories — record both.
2. Ramp: ``-r 10`` reaches 50 users in 5 s; hold for the rest of ``-t`` (2 min is enough to see
   a steady state, 10 min to see Redis evictions and memory growth). For a capacity run, step
   ``-u`` (25, 50, 100, 200, …) in separate runs until p99 or the failure rate breaks the budget;
   run production at no more than 80 % of that. Locust's Python client saturates at a few
   hundred requests/s per process: use ``--processes N`` (or more load machines) before
   concluding that the server is the bottleneck, and watch the load generator's CPU.
3. What to look at: ``results/staging_stats.csv`` — per endpoint ``Failure Count`` (must be 0),
   the 50 %/99 % columns (budget: p99 ≤ 50 ms for warm tiles) and ``Requests/s``;
   ``*_failures.csv`` for the status codes; the ``X-Cache`` (idrserve tier) and
   ``X-Cache-Status`` (nginx) counts this file logs at the end; on the servers ``/metrics``
   (``idrserve_cache_requests_total``), the 5xx rate in nginx's log, Redis ``evicted_keys``,
   CPU and memory of each worker. See ``deploy/README.md``.

TODO(jupyter): Jupyter region reads (numpy regions through the raw-pixel ``/api/v1`` API) belong
here as a third user class once that API exists (a later issue); nothing simulates them yet.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections import Counter
from typing import Any
from urllib.parse import quote

from gevent import GreenletExit
from gevent.pool import Group, Pool
from locust import FastHttpUser, between, events, task

log = logging.getLogger("idrserve.locust")

DEFAULT_IMAGES = "1001,1002,1003,1004,1005,1006"
VIEWPORT = (1024, 768)  # browser viewport of the viewer, in screen pixels
BROWSER_CONNECTIONS = 6  # parallel requests per host of an HTTP/1.1 browser
MAX_BATCH_THUMBNAILS = 50  # OMERO.web's limit for get_thumbnails
IN_FLIGHT_GRACE_S = 30.0  # how long a stopped user still waits for the requests it has sent

# One stats line per route template, not per URL.
N_INDEX = "/ (image list)"
N_IMGDATA = "/webgateway/imgData/[id]/"
N_THUMB = "/webgateway/render_thumbnail/[id]/"
N_BIRDS_EYE = "/webgateway/render_birds_eye_view/[id]/?rev="
N_TILE = "/webgateway/render_image_region/[id]/[z]/[t]/?tile="
N_PLANE = "/webgateway/render_image/[id]/[z]/[t]/"
N_GET_THUMBS = "/webgateway/get_thumbnails/?id=…"
N_WEBCLIENT_THUMB = "/webclient/render_thumbnail/[id]/"

_image_ids: list[int] | None = None
_cache_headers: Counter[str] = Counter()


def _millis() -> int:
    return int(time.time() * 1000)


def _num(value: float) -> str:
    """A window bound as iviewer prints it: integers without a fraction."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _check(resp: Any, expected: tuple[int, ...] = (200, 304)) -> bool:
    """Mark a `catch_response` response as failed unless its status is expected."""
    if resp.status_code in expected:
        resp.success()
        return True
    if resp.status_code >= 500:
        resp.failure(f"server error {resp.status_code}")
    elif resp.status_code == 0:
        resp.failure(f"connection error: {resp.error}")
    else:
        resp.failure(f"unexpected status {resp.status_code}")
    return False


def _join_in_flight(running: Group) -> None:
    """Wait for a group of requests, even if this user is killed meanwhile.

    At the end of a run locust kills users, and with a stop timeout it means to kill only
    those sleeping between steps; but a kill is delivered later, so a user that woke in the
    meantime is killed mid-step (seen here: 4 tiles logged by nginx, never by the client).
    The requests already sent then still finish and are counted, or the client's tallies
    come out short of the server's logs by whatever was in flight.
    """
    try:
        running.join()
    finally:
        deadline = time.monotonic() + IN_FLIGHT_GRACE_S
        while len(running) and time.monotonic() < deadline:
            try:
                running.join(timeout=deadline - time.monotonic())
            except GreenletExit:  # killed again while waiting: keep waiting, then re-raise
                continue


def _count_cache_headers(response: Any = None, exception: Any = None, **_kw: Any) -> None:
    # A response marked failed (a 503 under load, a slow answer) still carried its headers,
    # and nginx logged its cache status: count it, or the two tallies drift apart under load.
    if response is None:
        return
    headers = getattr(response, "headers", None) or {}
    for header in ("X-Cache", "X-Cache-Status"):
        value = headers.get(header)
        if value:
            _cache_headers[f"{header}: {value}"] += 1


def _log_cache_headers(**_kw: Any) -> None:
    if _cache_headers:
        log.info("cache headers seen: %s", json.dumps(dict(sorted(_cache_headers.items()))))


# Registered by call, not as decorators: locust leaves EventHook.add_listener unannotated.
events.request.add_listener(_count_cache_headers)
events.quitting.add_listener(_log_cache_headers)


class _ImageUser(FastHttpUser):
    abstract = True
    wait_time = between(0.05, 0.5)
    # Connections kept by one user's client: enough for a browser's parallel tile requests.
    concurrency = BROWSER_CONNECTIONS

    def wait(self) -> None:
        """Sleep for `wait_time`: locust's `User.wait` with the annotation it leaves off."""
        FastHttpUser.wait(self)

    def image_ids(self) -> list[int]:
        """Ids from IDRSERVE_LOCUST_IMAGES, or from `GET /` once per process when `auto`."""
        global _image_ids
        if _image_ids:
            return _image_ids
        spec = os.environ.get("IDRSERVE_LOCUST_IMAGES", DEFAULT_IMAGES).strip()
        if spec.lower() != "auto":
            _image_ids = [int(part) for part in spec.split(",") if part.strip()]
            return _image_ids
        limit = int(os.environ.get("IDRSERVE_LOCUST_MAX_IMAGES", "1000"))
        with self.client.get("/", name=N_INDEX, catch_response=True) as resp:
            if not _check(resp, (200,)):
                return []
            try:
                ids = [int(img["id"]) for img in resp.json()["images"]][:limit]
            except (ValueError, KeyError, TypeError) as exc:
                resp.failure(f"bad image list: {exc}")
                return []
            if not ids:
                resp.failure("the server lists no images")
        _image_ids = ids
        return ids


class ViewerUser(_ImageUser):
    """One OMERO.iviewer session per task run: open an image, zoom, pan, scroll z, channels."""

    weight = 10

    @task
    def view_image(self) -> None:
        ids = self.image_ids()
        if not ids:
            self.wait()
            return
        Session(self, random.choice(ids)).run()


class GridUser(_ImageUser):
    """A webclient thumbnail grid: batched data-URI thumbnails, then single thumbnails."""

    weight = 1

    @task
    def browse_grid(self) -> None:
        ids = self.image_ids()
        if not ids:
            self.wait()
            return
        page = random.sample(ids, min(len(ids), random.randint(12, 2 * MAX_BATCH_THUMBNAILS)))
        for start in range(0, len(page), MAX_BATCH_THUMBNAILS):
            self.one_request(self.thumbnail_batch, page[start : start + MAX_BATCH_THUMBNAILS])
        self.wait()
        for image_id in page[: random.randint(1, 8)]:
            self.one_request(self.thumbnail, image_id)

    def one_request(self, fetch: Any, *args: Any) -> None:
        """`fetch(*args)` in its own greenlet, so that a kill of this user does not cut it."""
        group = Group()
        group.spawn(fetch, *args)
        _join_in_flight(group)

    def thumbnail_batch(self, batch: list[int]) -> None:
        query = "&".join(f"id={i}" for i in batch)
        with self.client.get(
            f"/webgateway/get_thumbnails/?{query}", name=N_GET_THUMBS, catch_response=True
        ) as resp:
            if _check(resp, (200,)):
                try:
                    body = resp.json()
                except ValueError:
                    resp.failure("get_thumbnails: not JSON")
                else:
                    if not isinstance(body, dict) or len(body) != len(set(batch)):
                        resp.failure("get_thumbnails: wrong number of entries")

    def thumbnail(self, image_id: int) -> None:
        with self.client.get(
            f"/webclient/render_thumbnail/{image_id}/", name=N_WEBCLIENT_THUMB, catch_response=True
        ) as resp:
            _check(resp, (200,))


class Session:
    """The requests of one viewer session on one image, computed from its imgData."""

    def __init__(self, user: _ImageUser, image_id: int) -> None:
        self.user = user
        self.client = user.client
        self.id = image_id
        self.seen: set[str] = set()  # the browser's cache: a URL is fetched once per session
        self.pool = Pool(BROWSER_CONNECTIONS)

    # ---- requests --------------------------------------------------------------------------

    def get_image(self, url: str, name: str) -> None:
        if url in self.seen:
            return
        self.seen.add(url)
        with self.client.get(url, name=name, catch_response=True) as resp:
            _check(resp)

    def fetch_all(self, urls: list[tuple[str, str]]) -> None:
        # The pool holds a browser's connections, so a spawn waits while they are busy, and a
        # kill can land there too: the requests already sent are waited for all the same.
        try:
            for url, name in urls:
                if url not in self.seen:
                    self.pool.spawn(self.get_image, url, name)
        finally:
            _join_in_flight(self.pool)

    # ---- the session -----------------------------------------------------------------------

    def run(self) -> None:
        with self.client.get(
            f"/webgateway/imgData/{self.id}/", name=N_IMGDATA, catch_response=True
        ) as resp:
            if not _check(resp, (200,)):
                return
            try:
                data = resp.json()
                self.parse(data)
            except (ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
                resp.failure(f"imgData: {exc!r}")
                return
        self.fetch_all(
            [
                (f"/webgateway/render_thumbnail/{self.id}/", N_THUMB),
                (f"/webgateway/render_birds_eye_view/{self.id}/?rev={_millis()}", N_BIRDS_EYE),
            ]
        )
        self.user.wait()
        if not self.tiled:
            self.view_planes()
            return
        for _ in range(random.randint(1, 3)):  # points of interest
            self.zoom_around(random.random() * self.width, random.random() * self.height)

    def parse(self, data: dict[str, Any]) -> None:
        size = data["size"]
        self.width, self.height = int(size["width"]), int(size["height"])
        self.size_z, self.size_t = int(size.get("z", 1)), int(size.get("t", 1))
        rdefs = data.get("rdefs") or {}
        self.z = int(rdefs.get("defaultZ", 0))
        self.t = int(rdefs.get("defaultT", 0))
        self.model = "g" if rdefs.get("model") == "greyscale" else "c"
        self.channels = [
            {
                "window": f"{_num(ch['window']['start'])}:{_num(ch['window']['end'])}",
                "color": ch["color"],
                "inverted": bool(ch.get("inverted") or ch.get("reverseIntensity")),
            }
            for ch in data["channels"]
        ]
        self.active = [bool(ch["active"]) for ch in data["channels"]]
        if not any(self.active):
            self.active[0] = True
        self.tiled = bool(data.get("tiles"))
        if not self.tiled:
            return
        ts = data["tile_size"]
        self.tile_w, self.tile_h = int(ts["width"]), int(ts["height"])
        self.levels = int(data["levels"])
        resolutions = data.get("resolutions")
        scaling = data["zoomLevelScaling"]
        self.level_sizes: list[tuple[int, int]] = []
        for level in range(self.levels):  # level 0 = full resolution, as in `tile=`
            if resolutions and str(level) in resolutions:
                res = resolutions[str(level)]
                self.level_sizes.append((int(res["sizeX"]), int(res["sizeY"])))
            else:
                scale = float(scaling[str(level)])
                self.level_sizes.append((int(self.width * scale), int(self.height * scale)))

    def render_query(self) -> str:
        """`c`, `m`, `maps` and `q` as iviewer ≥ 0.18 sends them: active channels only."""
        entries, maps = [], []
        for index, (channel, active) in enumerate(zip(self.channels, self.active, strict=True)):
            if active:
                entries.append(f"{index + 1}|{channel['window']}${channel['color']}")
                maps.append({"inverted": {"enabled": channel["inverted"]}})
        maps_json = quote(json.dumps(maps, separators=(",", ":")), safe="")
        return f"c={quote(','.join(entries), safe='|:$,')}&m={self.model}&maps={maps_json}&q=0.9"

    def tile_urls(self, level: int, cx: float, cy: float) -> list[tuple[str, str]]:
        """The tiles of a viewport centred on (cx, cy) in full-resolution pixels."""
        lw, lh = self.level_sizes[level]
        scale_x, scale_y = lw / self.width, lh / self.height
        vw, vh = VIEWPORT
        x0 = min(max(cx * scale_x - vw / 2, 0), max(lw - vw, 0))
        y0 = min(max(cy * scale_y - vh / 2, 0), max(lh - vh, 0))
        cols = range(int(x0 // self.tile_w), math.ceil(min(x0 + vw, lw) / self.tile_w))
        rows = range(int(y0 // self.tile_h), math.ceil(min(y0 + vh, lh) / self.tile_h))
        query = self.render_query()
        base = f"/webgateway/render_image_region/{self.id}/{self.z}/{self.t}/"
        return [
            (f"{base}?tile={level},{col},{row},{self.tile_w},{self.tile_h}&{query}", N_TILE)
            for row in rows
            for col in cols
        ]

    def fit_level(self) -> int:
        """The most detailed level that fits in the viewport ("fit to screen"), else the least."""
        vw, vh = VIEWPORT
        for level, (lw, lh) in enumerate(self.level_sizes):
            if lw <= vw and lh <= vh:
                return level
        return self.levels - 1

    def zoom_around(self, cx: float, cy: float) -> None:
        start = self.fit_level()
        deepest = 0 if random.random() < 0.6 else random.randint(0, start)
        level = start
        for level in range(start, deepest - 1, -1):
            self.fetch_all(self.tile_urls(level, cx, cy))
            self.user.wait()
        # Pan: drag by half a viewport a few times, each drag uncovering neighbouring tiles.
        vw, vh = VIEWPORT
        lw, lh = self.level_sizes[level]
        for _ in range(random.randint(1, 3)):
            dx, dy = random.choice([(1, 0), (-1, 0), (0, 1), (0, -1)])
            cx = min(max(cx + dx * vw / 2 * self.width / lw, 0), self.width - 1)
            cy = min(max(cy + dy * vh / 2 * self.height / lh, 0), self.height - 1)
            self.fetch_all(self.tile_urls(level, cx, cy))
            self.user.wait()
        if self.size_z > 1:
            self.scroll_z(lambda: self.tile_urls(level, cx, cy))
        if len(self.channels) > 1:
            self.toggle_channel(lambda: self.tile_urls(level, cx, cy))

    def scroll_z(self, view: Any) -> None:
        """Step through a few neighbouring z planes and back to the first one."""
        start = self.z
        step = random.choice((1, -1)) if 0 < start < self.size_z - 1 else (1 if start == 0 else -1)
        for _ in range(random.randint(2, min(5, self.size_z - 1))):
            if not 0 <= self.z + step < self.size_z:
                break
            self.z += step
            self.fetch_all(view())
            self.user.wait()
        self.z = start

    def toggle_channel(self, view: Any) -> None:
        """Switch one channel off (a new `c`), then on again (tiles the browser already has)."""
        candidates = [i for i, on in enumerate(self.active) if on]
        if len(candidates) < 2:  # never switch the last active channel off
            candidates = [i for i, on in enumerate(self.active) if not on]
        if not candidates:
            return
        index = random.choice(candidates)
        self.active[index] = not self.active[index]
        self.fetch_all(view())
        self.user.wait()
        self.active[index] = not self.active[index]
        self.fetch_all(view())
        self.user.wait()

    def view_planes(self) -> None:
        """Images without tiles: whole planes, with z scrolling and a channel switch."""

        def plane() -> list[tuple[str, str]]:
            url = f"/webgateway/render_image/{self.id}/{self.z}/{self.t}/?{self.render_query()}"
            return [(url, N_PLANE)]

        self.fetch_all(plane())
        self.user.wait()
        if self.size_z > 1:
            self.scroll_z(plane)
        if len(self.channels) > 1:
            self.toggle_channel(plane)
