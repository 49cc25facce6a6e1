"""IIIF Image API 3.0 (level 2) at `/iiif/3/…` and 2.1 at `/iiif/2/…`.

One catch-all route per version: the path is split on raw `/` (so an encoded `%2F` stays
inside its segment), then

* `{identifier}` → 303 to `{identifier}/info.json` (`baseUriRedirect`);
* `{identifier}/info.json` → the image information document;
* `{identifier}/manifest.json` (3 only) → a Presentation 3 manifest;
* `{identifier}/{region}/{size}/{rotation}/{quality}.{format}` → pixels;
* anything else → 404.

`/iiif/3/{identifier}/manifest.json` is a minimal IIIF Presentation 3 manifest (one canvas
per z-plane) for viewers that start from manifests, such as Mirador.

The identifier names the image and its rendering (`http/iiif_params.py`, docs/iiif.md).
Image requests become a `RegionRequest` (`pyramid.plan_region` picks the stored level, the
raw area factor for unstored levels and the final size) and go through the same cache and
pipeline as webgateway, so a IIIF tile equal to a webgateway tile has the same key and bytes.
Errors are the JSON bodies of `http/middleware.py` with IIIF's statuses: 400 malformed, 404
unknown image or plane, 501 valid but not implemented.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from idrserve.http.iiif_params import (
    FORMATS,
    Identifier,
    SizeSpec,
    Version,
    parse_identifier,
    parse_quality_format,
    parse_region,
    parse_rotation,
    parse_size,
    resolve_size,
)
from idrserve.http.keys import DEPS, SETTINGS
from idrserve.http.plan import IiifAsk, identifier_plane, iiif_limits, plan_iiif, tile_size
from idrserve.http.responses import respond_rendered
from idrserve.http.urls import forwarded_headers_used, link_cache_control, public_base
from idrserve.lru import BoundedLRU
from idrserve.model import Box, Format, ImageMeta, Tone
from idrserve.service import Deps
from idrserve.settings import LimitSettings

CONTEXT = {
    Version.V3: "http://iiif.io/api/image/3/context.json",
    Version.V2: "http://iiif.io/api/image/2/context.json",
}
PROTOCOL = "http://iiif.io/api/image"
# The compliance profile, named in info.json (2.1) and in the profile Link of every response.
PROFILE = {
    Version.V3: "http://iiif.io/api/image/3/level2.json",
    Version.V2: "http://iiif.io/api/image/2/level2.json",
}
# Beyond level 2: mirroring, `^` upscaling. (Level 2 itself covers the rest we do.)
EXTRA_FEATURES = ["canonicalLinkHeader", "mirroring", "profileLinkHeader", "sizeUpscaling"]
V2_SUPPORTS = [
    "baseUriRedirect",
    "canonicalLinkHeader",
    "cors",
    "jsonldMediaType",
    "mirroring",
    "profileLinkHeader",
    "regionByPct",
    "regionByPx",
    "regionSquare",
    "rotationBy90s",
    "sizeAboveFull",
    "sizeByConfinedWh",
    "sizeByDistortedWh",
    "sizeByH",
    "sizeByPct",
    "sizeByW",
    "sizeByWh",
]


def scale_factors(width: int, height: int, tile_w: int, tile_h: int) -> list[int]:
    """1, 2, 4, … up to the first factor at which the whole image fits one tile."""
    factors = [1]
    while -(-width // factors[-1]) > tile_w or -(-height // factors[-1]) > tile_h:
        factors.append(factors[-1] * 2)
    return factors


def info_document(
    meta: ImageMeta, version: Version, base_id: str, limits: LimitSettings
) -> dict[str, Any]:
    """The info.json of one identifier; `base_id` is its public URL without a trailing slash."""
    lim = iiif_limits(limits)
    tw, th = tile_size(meta, limits)
    factors = scale_factors(meta.size_x, meta.size_y, tw, th)
    tile: dict[str, Any] = {"width": tw, "height": th, "scaleFactors": factors}
    sizes = []
    for f in reversed(factors):
        w, h = -(-meta.size_x // f), -(-meta.size_y // f)
        if w <= lim.max_width and h <= lim.max_height and w * h <= lim.max_area:
            sizes.append({"width": w, "height": h})
    if version is Version.V3:
        return {
            "@context": CONTEXT[version],
            "id": base_id,
            "type": "ImageService3",
            "protocol": PROTOCOL,
            "profile": "level2",
            "width": meta.size_x,
            "height": meta.size_y,
            "maxWidth": lim.max_width,
            "maxHeight": lim.max_height,
            "maxArea": lim.max_area,
            "tiles": [tile],
            "sizes": sizes,
            "preferredFormats": ["jpg"],
            "extraFormats": ["tif", "webp"],
            "extraQualities": ["color", "gray", "bitonal"],
            "extraFeatures": EXTRA_FEATURES,
        }
    return {
        "@context": CONTEXT[version],
        "@id": base_id,
        "protocol": PROTOCOL,
        "width": meta.size_x,
        "height": meta.size_y,
        "tiles": [tile],
        "sizes": sizes,
        "profile": [
            PROFILE[Version.V2],
            {
                "formats": list(FORMATS),
                "qualities": ["default", "color", "gray", "bitonal"],
                "supports": V2_SUPPORTS,
                "maxWidth": lim.max_width,
                "maxHeight": lim.max_height,
                "maxArea": lim.max_area,
            },
        ],
    }


def public_identifier(raw_id: str) -> str:
    """The identifier as it appears in `id`: `|` (and anything else not allowed unencoded in
    a path segment) percent-encoded, so clients can append tile paths to `id` as is."""
    return quote(_decode(raw_id), safe=";=,:$!-_.~*'()@+&")


def _prefix(version: Version) -> str:
    return f"/iiif/{version.value}/"


async def _meta_for(deps: Deps, ident: Identifier) -> ImageMeta:
    """The image's metadata; 404 when the identifier names a plane that does not exist."""
    meta = await deps.source.meta(ident.image_id)
    identifier_plane(ident, meta)
    return meta


async def _info(request: web.Request, version: Version, raw_id: str) -> web.Response:
    deps, settings = request.app[DEPS], request.app[SETTINGS]
    ident = parse_identifier(raw_id, deps.limits.max_active_channels)
    meta = await _meta_for(deps, ident)
    base_id = f"{public_base(request)}{_prefix(version)}{public_identifier(raw_id)}"
    body = json.dumps(info_document(meta, version, base_id, deps.limits), separators=(",", ":"))
    accept = request.headers.get("Accept", "")
    if version is Version.V3 or "application/ld+json" in accept:
        content_type = f'application/ld+json;profile="{CONTEXT[version]}"'
    else:
        content_type = "application/json"
    # Without a configured public URL the document names the Host it was asked for: browsers
    # may keep it, shared caches (nginx keys on the path only) must not.
    cache_control = (
        "private, max-age=3600"
        if forwarded_headers_used(request)
        else settings.server.cache_control
    )
    return web.Response(
        body=body.encode(),
        headers={
            "Content-Type": content_type,
            "Cache-Control": cache_control,
            "Link": f'<{PROFILE[version]}>;rel="profile"',
        },
    )


def _redirect(request: web.Request, version: Version, raw_id: str) -> web.Response:
    location = f"{public_base(request)}{_prefix(version)}{public_identifier(raw_id)}/info.json"
    headers = {"Location": location}
    if forwarded_headers_used(request):
        headers["Cache-Control"] = link_cache_control(request)
    return web.Response(status=303, headers=headers)


def link_headers(version: Version, canonical: str) -> dict[str, str]:
    """`Link` with the compliance profile and the canonical URI (features profileLinkHeader and
    canonicalLinkHeader). The canonical URI is a relative reference (RFC 8288 §3.1: resolved
    against the request URI): `../../../` climbs from the rotation segment to the identifier,
    so it is right under any host, proxy prefix or public base, and the fast path can replay
    it for every URL it remembers. `^` is not a URI character, hence %5E."""
    target = "../../../" + canonical.replace("^", "%5E")
    return {
        "Link": f'<{PROFILE[version]}>;rel="profile", <{target}>;rel="canonical"',
    }


def _decode(segment: str) -> str:
    """Percent-decode one path segment; undecodable bytes make it malformed (400 later)."""
    if "%" not in segment:
        return segment
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        return "\ufffd"


# The segments of an image request but its region, parsed, by their text: one viewer's tiles
# repeat them (identifier, size, rotation, quality and format), so a tile parses only its
# region. Parsing them cost 3–4 µs of a IIIF tile's 5.8 (bench/bench_plan.py). Keys are the
# client's text, so the memo is bounded; a refused segment is never kept.
FIXED_KEPT = 256
_Fixed = tuple[Identifier, SizeSpec, bool, int, Tone, Format, str, str]
_FIXED: BoundedLRU[tuple[object, ...], _Fixed] = BoundedLRU(FIXED_KEPT)


def image_ask(version: Version, segments: list[str], limits: LimitSettings) -> IiifAsk:
    """The five segments of an image request, parsed (400 for any malformed one); also what
    http/coldpath.py plans a tile with."""
    key = (version, limits.max_active_channels, segments[0], *segments[2:])
    fixed = _FIXED.get(key)
    if fixed is not None:  # valid, so the region is the only segment left to refuse
        return IiifAsk(version, fixed[0], parse_region(_decode(segments[1])), *fixed[1:])
    # Clients may percent-encode `^`, `!`, `,` or `:` (yarl and some browsers encode `^`).
    region_text, size_text, rotation_text, last = (_decode(s) for s in segments[1:])
    # Syntax first (400 for any malformed segment), then the image (404), then semantics.
    ident = parse_identifier(segments[0], limits.max_active_channels)
    region, size = parse_region(region_text), parse_size(size_text, version)
    mirror, degrees = parse_rotation(rotation_text)
    tone, fmt = parse_quality_format(last)
    quality, _, ext = last.rpartition(".")
    _FIXED.put(key, (ident, size, mirror, degrees, tone, fmt, quality, ext))
    return IiifAsk(version, ident, region, size, mirror, degrees, tone, fmt, quality, ext)


async def _image(request: web.Request, version: Version, segments: list[str]) -> web.StreamResponse:
    deps = request.app[DEPS]
    ask = image_ask(version, segments, deps.limits)
    meta = await deps.source.meta(ask.identifier.image_id)
    req, canonical = plan_iiif(ask, meta, deps.limits)
    return await respond_rendered(request, req, meta, link_headers(version, canonical))


async def handle(request: web.Request) -> web.StreamResponse:
    """Every GET/HEAD under `/iiif/{2,3}/`: split the raw path and dispatch (module docstring)."""
    version = Version(request.match_info["version"])
    raw = request.rel_url.raw_path
    prefix = _prefix(version)
    segments = raw[len(prefix) :].split("/") if raw.startswith(prefix) else []
    if segments and segments[-1] == "" and len(segments) == 2:
        segments = segments[:1]  # `{identifier}/`: the base URI with a slash
    if len(segments) == 1 and segments[0]:
        parse_identifier(segments[0], request.app[DEPS].limits.max_active_channels)
        return _redirect(request, version, segments[0])
    if len(segments) == 2 and segments[0] and segments[1] == "info.json":
        return await _info(request, version, segments[0])
    if (
        len(segments) == 2
        and segments[0]
        and segments[1] == "manifest.json"
        and version is Version.V3  # Presentation 3 only
    ):
        return await _manifest(request, segments[0])
    if len(segments) == 5 and all(segments):
        return await _image(request, version, segments)
    raise web.HTTPNotFound()


MAX_CANVASES = 1000
PRESENTATION_CONTEXT = "http://iiif.io/api/presentation/3/context.json"


def manifest_document(
    meta: ImageMeta, ident_text: str, ident: Identifier, base: str, limits: LimitSettings
) -> dict[str, Any]:
    """A minimal IIIF Presentation 3 manifest: one canvas per z-plane (Mirador needs one).

    With `z` in the identifier there is one canvas; otherwise one per plane (at most
    MAX_CANVASES), each painted by the image service of that plane.
    """
    mid = f"{base}/iiif/3/{ident_text}/manifest.json"
    planes = [ident.z] if ident.z is not None else list(range(min(meta.size_z, MAX_CANVASES)))
    lim = iiif_limits(limits)
    full = Box(0, 0, meta.size_x, meta.size_y)
    body_w, body_h = resolve_size(parse_size("max", Version.V3), full, Version.V3, lim)
    canvases = []
    for z in planes:
        service_id = f"{base}/iiif/3/{ident_text}" + ("" if ident.z is not None else f";z={z}")
        canvas_id = f"{mid}/canvas/{z}"
        canvases.append(
            {
                "id": canvas_id,
                "type": "Canvas",
                "label": {"none": [f"z={z}"]},
                "width": meta.size_x,
                "height": meta.size_y,
                "items": [
                    {
                        "id": f"{mid}/page/{z}",
                        "type": "AnnotationPage",
                        "items": [
                            {
                                "id": f"{mid}/annotation/{z}",
                                "type": "Annotation",
                                "motivation": "painting",
                                "target": canvas_id,
                                "body": {
                                    "id": f"{service_id}/full/max/0/default.jpg",
                                    "type": "Image",
                                    "format": "image/jpeg",
                                    "width": body_w,
                                    "height": body_h,
                                    "service": [
                                        {
                                            "id": service_id,
                                            "type": "ImageService3",
                                            "profile": "level2",
                                        }
                                    ],
                                },
                            }
                        ],
                    }
                ],
            }
        )
    return {
        "@context": PRESENTATION_CONTEXT,
        "id": mid,
        "type": "Manifest",
        "label": {"none": [meta.name or str(meta.image_id)]},
        "items": canvases,
    }


async def _manifest(request: web.Request, raw: str) -> web.Response:
    """`/iiif/3/{identifier}/manifest.json`: a Presentation 3 manifest for Mirador and friends."""
    deps = request.app[DEPS]
    ident = parse_identifier(raw, deps.limits.max_active_channels)
    meta = await _meta_for(deps, ident)
    text = public_identifier(raw)
    doc = manifest_document(meta, text, ident, public_base(request), deps.limits)
    cache_control = (
        "private, max-age=3600"
        if forwarded_headers_used(request)
        else request.app[SETTINGS].server.cache_control
    )
    return web.Response(
        body=json.dumps(doc, separators=(",", ":")).encode(),
        headers={
            "Content-Type": f'application/ld+json;profile="{PRESENTATION_CONTEXT}"',
            "Cache-Control": cache_control,
        },
    )


def add_routes(app: web.Application) -> None:
    """`/iiif/3/…` and `/iiif/2/…` (GET and HEAD; OPTIONS: `middleware.answer_options`)."""
    app.router.add_get(r"/iiif/{version:[23]}/{tail:.*}", handle, name="iiif")
