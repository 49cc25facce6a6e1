"""`/zarr/{id}.zarr/` (NGFF 0.4, Zarr v2) and `/zarr/v3/{id}.zarr/` (NGFF 0.5, Zarr v3).

A read-only store over HTTP that zarr-python (fsspec), dask, ome-zarr-py, napari and browser
readers such as zarrita.js read unchanged: GET and HEAD of store keys, one `Range` per request
(206, or 416 when it starts past the end; suffix ranges too), `ETag`/`If-None-Match`, and 404
for any key the store does not hold, which clients turn into fill values. A range of a stored
chunk or shard is read from storage alone, without the rest of the object.

The two formats live under separate prefixes because zarr-python 3 asks for `zarr.json`,
`.zgroup` and `.zattrs` at once and, finding both formats, warns and picks v3: serving both at
one URL would switch every NGFF 0.4 client to 0.5.
Keys are parsed, never joined onto file paths, so `..` and encoded separators cannot escape.
"""

from __future__ import annotations

import re

from aiohttp import web

from idrserve.errors import BadRequest
from idrserve.http import params
from idrserve.http.keys import DEPS, SETTINGS, TRACE
from idrserve.http.middleware import error_response
from idrserve.http.responses import etag_matches
from idrserve.http.trace import Trace
from idrserve.http.urls import link_cache_control, public_base
from idrserve.zarrview import (
    CHUNK_TYPE,
    JSON_TYPE,
    Blob,
    ChunkRef,
    ZarrView,
    ZarrViews,
    digest_tag,
    not_found,
    read_chunk,
    read_chunk_span,
    resolve_key,
    stored_tag,
)

VIEWS = web.AppKey("zarr_views", ZarrViews)
ID = r"{iid:\d{1,19}}"
# Store keys are short relative names of digits, dots, `c` and metadata file names.
MAX_KEY_LENGTH = 256
_BAD_KEY = re.compile(r"(^|/)\.\.?(/|$)|\\|//|%|\x00")
# `parse_range` result for a range that starts at or past the end of the object.
UNSATISFIABLE = (-1, -1)
_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")


def _store_key(request: web.Request) -> str:
    """The requested key, refused (400) when it tries to name anything but a store key."""
    key = request.match_info["key"]
    raw = request.raw_path.lower()
    if len(key) > MAX_KEY_LENGTH:
        raise BadRequest(f"store key longer than {MAX_KEY_LENGTH} characters", param="key")
    if _BAD_KEY.search(key) or "%2e" in raw or "%2f" in raw or "%5c" in raw:
        raise BadRequest(
            "store keys are plain relative names such as '.zattrs' or '0/0/0/0'; "
            "'..', '.', empty segments, backslashes and percent-encoding are not allowed",
            param="key",
        )
    return key


async def zarr_key(request: web.Request) -> web.StreamResponse:
    """One store key of an image's NGFF view: a metadata document or a chunk."""
    deps = request.app[DEPS]
    iid = params.parse_path_int(request.match_info["iid"], "image_id")
    zarr_format = 3 if request.match_info.route.name == "zarr_v3_key" else 2
    key = _store_key(request)
    view = await request.app[VIEWS].get(deps, iid, zarr_format)
    if key == "":
        return _index(request, iid, zarr_format, len(view.levels))
    found = resolve_key(view, key)
    if found is None:
        raise not_found(iid, key)
    if isinstance(found, ChunkRef):
        if view.passthrough and "Range" in request.headers:
            return await stored_range(request, view, found, key)
        blob = await read_chunk(view, found, deps)
        if blob is None:
            raise not_found(iid, key)
    else:
        blob = Blob(found, JSON_TYPE, digest_tag(found))
    return bytes_response(request, blob, request.app[SETTINGS].server.cache_control)


def _index(request: web.Request, iid: int, zarr_format: int, n_levels: int) -> web.Response:
    """The store root: not a key, so a short JSON pointer to what a client should open."""
    base = f"{public_base(request)}{request.path}"
    keys = [".zgroup", ".zattrs"] if zarr_format == 2 else ["zarr.json"]
    meta_key = ".zarray" if zarr_format == 2 else "zarr.json"
    return web.json_response(
        {
            "image_id": iid,
            "ngff": "0.4" if zarr_format == 2 else "0.5",
            "zarr_format": zarr_format,
            "url": base,
            "keys": keys + [f"{i}/{meta_key}" for i in range(n_levels)],
        },
        headers={"Cache-Control": link_cache_control(request, "no-cache")},
    )


async def stored_range(
    request: web.Request, view: ZarrView, ref: ChunkRef, key: str
) -> web.StreamResponse:
    """A Range of a stored chunk or shard (a shard's index by a suffix range, one inner chunk),
    read without the rest of it; a 304, a stale If-Range or a range to ignore are answered as
    for the whole object."""
    deps, cache_control = request.app[DEPS], request.app[SETTINGS].server.cache_control
    etag = stored_tag(view, ref)
    headers = _headers(request, etag, cache_control, "off")
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    wanted = request.headers["Range"]
    if_range = request.headers.get("If-Range")
    if if_range is None or if_range.strip() == etag:
        found = await read_chunk_span(view, ref, lambda size: parse_range(wanted, size))
        if found is None:
            raise not_found(view.meta.image_id, key)
        size, span, body = found
        if span == UNSATISFIABLE:
            return _unsatisfiable(request, wanted, size)
        if span is not None:
            return _partial(body, span, size, CHUNK_TYPE, headers)
    blob = await read_chunk(view, ref, deps)
    if blob is None:
        raise not_found(view.meta.image_id, key)
    return bytes_response(request, blob, cache_control)


def bytes_response(request: web.Request, blob: Blob, cache_control: str) -> web.Response:
    """200, 206 (one satisfiable range), 304 or 416 for `blob`; HEAD gets the same headers."""
    headers = _headers(request, blob.etag, cache_control, blob.tier)
    if etag_matches(request.headers.get("If-None-Match"), blob.etag):
        return web.Response(status=304, headers=headers)
    size = len(blob.body)
    wanted = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if wanted and (if_range is None or if_range.strip() == blob.etag):
        span = parse_range(wanted, size)
        if span == UNSATISFIABLE:
            return _unsatisfiable(request, wanted, size)
        if span is not None:
            start, stop = span
            return _partial(blob.body[start:stop], span, size, blob.media_type, headers)
    return web.Response(body=blob.body, content_type=blob.media_type, headers=headers)


def _headers(request: web.Request, etag: str, cache_control: str, tier: str) -> dict[str, str]:
    request[TRACE] = Trace(tier)
    return {
        "ETag": etag,
        "Cache-Control": cache_control,
        "Accept-Ranges": "bytes",
        "X-Cache": tier,
    }


def _partial(
    body: bytes, span: tuple[int, int], size: int, media_type: str, headers: dict[str, str]
) -> web.Response:
    headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{size}"
    return web.Response(status=206, body=body, content_type=media_type, headers=headers)


def _unsatisfiable(request: web.Request, wanted: str, size: int) -> web.Response:
    response = error_response(
        request,
        416,
        "range_not_satisfiable",
        f"Range {wanted!r} starts at or past the end of the {size}-byte object",
        "Range",
    )
    response.headers["Content-Range"] = f"bytes */{size}"
    return response


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """[start, stop) of one byte range, `UNSATISFIABLE`, or None to ignore the header.

    RFC 9110 §14.2: a syntactically invalid or multi-range header may be ignored (a full 200);
    a suffix range longer than the object means the whole object.
    """
    match = _RANGE.match(value.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        if last == "":
            return None
        n = int(last)
        if n == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - n), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid: ignore
    if start >= size:
        return UNSATISFIABLE
    stop = size if last == "" else min(size, int(last) + 1)
    return start, stop


def add_routes(app: web.Application) -> None:
    """Register the v2 and v3 store views (GET and HEAD)."""
    app[VIEWS] = ZarrViews()
    app.router.add_get(f"/zarr/{ID}.zarr/{{key:.*}}", zarr_key, name="zarr_v2_key")
    app.router.add_get(f"/zarr/v3/{ID}.zarr/{{key:.*}}", zarr_key, name="zarr_v3_key")
