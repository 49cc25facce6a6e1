"""The OpenAPI 3.1 document served at `/openapi.json`, from hand-written data per route family.

Each `_Op` below documents one family of routes (a regular expression over the route's
template, e.g. every `render_image_region` alias): summary, query parameters, responses.
Path parameters are documented once by name in `PATH_PARAMS`. `build_spec` walks the app's
router and emits one operation per registered (method, path); a route that no family matches
is left out, and `tests/ops/test_ops_http.py` fails on it, so a new route cannot ship
undocumented. The document is also what schemathesis fuzzes (`tests/ops/test_schemathesis.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from idrserve import __version__

JSON = "application/json"
IMAGES = ("image/jpeg", "image/png", "image/tiff")


def _str(pattern: str | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern is not None:
        schema["pattern"] = pattern
    schema.update(extra)
    return schema


# Path parameters by name: the same constraint as the route's regular expression, so any
# value the schema allows reaches the handler (and anything else is a JSON 404).
PATH_PARAMS: dict[str, tuple[dict[str, Any], str]] = {
    "iid": (_str(r"^\d{1,19}$", examples=["1001"]), "OMERO image id (digits)"),
    "z": (_str(r"^\d{1,9}$", examples=["0"]), "z-plane index (0-based)"),
    "t": (_str(r"^\d{1,9}$", examples=["0"]), "timepoint index (0-based)"),
    "w": (_str(r"^\d{1,9}$", examples=["96"]), "width in pixels (thumbnail longest side)"),
    "h": (_str(r"^\d{1,9}$", examples=["96"]), "height in pixels"),
    "size": (_str(r"^\d{1,9}$", examples=["96"]), "longest side in pixels"),
    "share": (_str(r"^\d{1,19}$", examples=["1"]), "OMERO share id (ignored for public data)"),
    "c": (_str(r"^\d{1,9}$", examples=["0"]), "channel index (0-based)"),
    "key": (_str(r"^[^/]{1,200}$", examples=["meta"]), "one top-level key of the imgData JSON"),
    "tail": (_str(r"^.*$", examples=["render_image_region/1001/0/0/"]), "any path"),
    "version": (_str(r"^[23]$", examples=["3"]), "IIIF Image API major version"),
    "level": (_str(r"^\d{1,3}$", examples=["12"]), "DeepZoom level (0 = 1×1 pixel)"),
    "col": (_str(r"^\d{1,9}$", examples=["0"]), "tile column"),
    "row": (_str(r"^\d{1,9}$", examples=["0"]), "tile row"),
    "ext": (_str(r"^[A-Za-z]{1,8}$", examples=["jpg"]), "tile format: jpg, jpeg or png"),
    "path": (_str(r"^.+$", examples=["viewer.js"]), "file under the static directory"),
    "pid": (_str(r"^\d{1,19}$", examples=["2551"]), "plate id (docs/plates.md)"),
    "field": (_str(r"^\d{1,4}$", examples=["0"]), "field index within each well (0-based)"),
    "acq": (_str(r"^\d{1,19}$", examples=["0"]), "acquisition (run) id of the plate"),
    "wid": (_str(r"^\d{1,19}$", examples=["7000025510000000"]), "well id (docs/plates.md)"),
}


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


CALLBACK = _q("callback", "JSONP: wrap the JSON in `callback(...)` (a JavaScript identifier)")
RENDER_QUERY = [
    _q(
        "c",
        "channels: `1|110:1800$0000FF,-2,3|0:255$fire.lut` (index, `-` = off, window, colour "
        "or LUT)",
    ),
    _q("m", "colour model: `c` (colour) or `g` (greyscale)", _str(examples=["c"])),
    _q("maps", 'JSON list per channel: `[{"inverted":{"enabled":true}}]` and quantization'),
    _q("p", "projection: `normal`, `intmax`, `intmean`, `intsum`, optionally `|start:end`"),
    _q("q", "JPEG quality, 0 < q ≤ 1", _str(examples=["0.9"])),
    _q("format", "output format: `jpeg`, `png` or `tif`", _str(examples=["png"])),
    _q("flip", "mirror the output: `h`, `v` or `hv`"),
    _q("ia", "OMERO.web option, accepted and ignored"),
    _q("_", "cache buster, ignored"),
]
REGION_QUERY = [
    _q("tile", "`level,col,row[,w,h]` (level 0 = full resolution)"),
    _q("region", "`x,y,w,h` in full-resolution pixels"),
]
THUMB_QUERY = [
    _q("z", "z-plane (default: the saved default)", _str(examples=["0"])),
    _q("t", "timepoint (default: the saved default)", _str(examples=["0"])),
    _q("rev", "cache buster, ignored"),
]


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


ERRORS: dict[str, Any] = {
    "400": _error("bad parameter; the body names it (`param`) and says what was expected"),
    "404": _error("no such image, plane, tile or route"),
    "413": _error("over a size limit (`limits.*`)"),
    "414": _error("URL over `limits.max_url_length`"),
    "502": _error("stored data could not be read or decoded (this image only)"),
    "503": _error("overloaded (admission control) or storage unavailable; see Retry-After"),
    "504": _error("the per-request deadline (`limits.request_timeout_s`) expired"),
}


def _image_ok(description: str) -> dict[str, Any]:
    return {
        "200": {
            "description": description,
            "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in IMAGES},
        },
        "304": {"description": "not modified (If-None-Match matched the ETag)"},
    }


def _json_ok(description: str, media: tuple[str, ...] = (JSON,)) -> dict[str, Any]:
    return {"200": {"description": description, "content": {m: {} for m in media}}}


@dataclass(frozen=True)
class _Op:
    """One documented family of routes."""

    pattern: str  # regular expression over "METHOD path-template"
    summary: str
    tag: str
    query: list[dict[str, Any]] = field(default_factory=list)
    responses: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # Path parameters whose meaning differs from `PATH_PARAMS` on these routes.
    path: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)


WG = r"/web(?:gateway|client)/(?:\{share\}/)?"
OPS: list[_Op] = [
    _Op(
        rf"^GET {WG}render_image_region(?:_rdef)?/",
        "A tile (`tile=`) or region (`region=`) of one plane, rendered",
        "webgateway",
        REGION_QUERY + RENDER_QUERY,
        _image_ok("the rendered tile or region"),
        "OMERO.web's render_image_region; `_rdef` validates every `c` entry strictly.",
    ),
    _Op(
        rf"^GET {WG}render_image(?:_rdef|_download)?/",
        "A whole plane (optionally a z-projection), rendered",
        "webgateway",
        RENDER_QUERY,
        _image_ok("the rendered plane"),
        "Bounded by `limits.max_region_pixels` (413 beyond it).",
    ),
    _Op(
        r"^GET /web(?:gateway|client)/(?:\{share\}/)?render_(?:thumbnail|birds_eye_view)/",
        "A thumbnail from the saved rendering settings",
        "webgateway",
        THUMB_QUERY,
        _image_ok("the thumbnail (webclient answers a missing image with a placeholder)"),
    ),
    _Op(
        r"^GET /web(?:gateway|client)/get_thumbnails/",
        "Several thumbnails as data URIs, keyed by image id",
        "webgateway",
        [
            _q(
                "id",
                "image ids (repeat the parameter; at most `limits.max_batch_thumbnails`)",
                {"type": "array", "items": {"type": "string", "examples": ["1001"]}},
            ),
            CALLBACK,
        ],
        _json_ok("{id: data URI or null}", (JSON, "application/javascript")),
    ),
    _Op(
        r"^GET /web(?:gateway|client)/get_thumbnail/",
        "One thumbnail as a JSON string holding a data URI",
        "webgateway",
        [CALLBACK],
        _json_ok("a data URI", (JSON, "application/javascript")),
    ),
    _Op(
        r"^GET /web(?:gateway|client)/(?:\{share\}/)?imgData/",
        "The viewer's image metadata (OMERO.web imgData JSON)",
        "webgateway",
        [CALLBACK, _q("getDefaults", "accepted and ignored (saved settings are the defaults)")],
        _json_ok("imgData JSON, or one key of it", (JSON, "application/javascript")),
    ),
    _Op(
        r"^GET /webgateway/luts/$",
        "The lookup tables a `c=` entry may name",
        "webgateway",
        [],
        _json_ok("{luts: [...]}"),
    ),
    _Op(
        r"^(?:GET|OPTIONS) /omero_ms_image_region/$",
        "Feature and limit probe of omero-ms-image-region (read by OMERO.iviewer)",
        "webgateway",
        [],
        _json_ok("{provider, version, features, options: {maxActiveChannels, ...}}"),
    ),
    _Op(
        r"^OPTIONS /webgateway/\{tail\}$",
        "The same feature and limit probe on every webgateway path (and CORS preflight)",
        "webgateway",
        [],
        _json_ok("{provider, version, features, options: {maxActiveChannels, ...}}"),
    ),
    _Op(
        r"^GET /iviewer/image_data/\{iid\}/$",
        "OMERO.iviewer's image JSON: imgData plus ROI count, pixel-size units, families",
        "iviewer",
        [],
        _json_ok("iviewer's image_data JSON (docs/iviewer.md)"),
    ),
    _Op(
        r"^GET /iviewer/image_data/\{iid\}/delta_t/$",
        "Plane times per timepoint (none recorded: an empty list, as OMERO.web answers "
        "an image without PlaneInfo timings)",
        "iviewer",
        [],
        _json_ok("{delta_t: [], delta_t_unit_symbol: null}"),
    ),
    _Op(
        r"^GET /webgateway/histogram_json/\{iid\}/channel/\{c\}/$",
        "One channel's intensity histogram of one plane (OMERO.web's histogram_json)",
        "iviewer",
        [
            _q("theZ", "z-plane (0-based, default 0)", _str(examples=["0"])),
            _q("theT", "timepoint (0-based, default 0)", _str(examples=["0"])),
            _q("bins", "number of bins (default 256; ≤ 0 means 256; at most 4096)"),
        ],
        {
            **_json_ok("{data: [count, …]} over the channel's window min..max"),
            "304": {"description": "not modified (If-None-Match matched the ETag)"},
        },
        "Counted from the coarsest level at least 512 pixels on each side; cached.",
    ),
    _Op(
        r"^GET /webgateway/luts_png/$",
        "The LUT sprite iviewer's LUT picker slices: a 10-pixel band per LUT, then a gradient",
        "iviewer",
        [_q("cached", "OMERO.web's cache switch, accepted and ignored")],
        {
            "200": {"description": "RGBA PNG, 256 wide", "content": {"image/png": {}}},
            "304": {"description": "not modified (If-None-Match matched the ETag)"},
        },
        "Bands follow `/webgateway/luts/` (`png_index_new`).",
    ),
    _Op(
        r"^GET /webgateway/getImgRDef/$",
        'Rendering settings copied in this session (never any: `{"rdef": null}`)',
        "iviewer",
        [CALLBACK],
        _json_ok("{rdef: null}", (JSON, "application/javascript")),
    ),
    _Op(
        r"^GET /webgateway/get_image_rdefs_json/\{iid\}/$",
        "The image's saved rendering definitions (one, from the NGFF omero block)",
        "iviewer",
        [CALLBACK],
        _json_ok("{rdefs: [...]}", (JSON, "application/javascript")),
    ),
    _Op(
        r"^GET /webgateway/open_with/$",
        'OMERO.web\'s "Open with" viewers (none offered: an empty list)',
        "iviewer",
        [CALLBACK],
        _json_ok("{open_with_options: []}", (JSON, "application/javascript")),
    ),
    _Op(
        r"^GET /webclient/api/paths_to_object/$",
        "Container paths to an object (none known: an empty list)",
        "iviewer",
        [
            _q(name, "an object id (integer; any other value is a 400)", _str(examples=["1"]))
            for name in ("image", "dataset", "project", "roi", "shape", "page_size")
        ],
        _json_ok("{paths: []}"),
    ),
    _Op(r"^GET /$", "The served images, with a few URLs each", "service", [], _json_ok("JSON")),
    _Op(
        r"^GET /iiif/\{version\}/\{tail\}$",
        "IIIF Image API 2.1 / 3.0: `{identifier}/info.json` and "
        "`{identifier}/{region}/{size}/{rotation}/{quality}.{format}`",
        "iiif",
        [],
        {
            "200": {
                "description": "info.json or the image",
                "content": {JSON: {}, "application/ld+json": {}, **{m: {} for m in IMAGES}},
            },
            "303": {"description": "the base URI redirects to info.json"},
            "304": {"description": "not modified"},
        },
        "The identifier is the image id, optionally with rendering settings "
        "(e.g. `1001;c=1|0:3000$FF0000`); errors use IIIF's own JSON form.",
        {"tail": (_str(examples=["1001/info.json"]), "identifier and image request")},
    ),
    _Op(
        r"^GET /deepzoom/\{iid\}\.dzi$",
        "DeepZoom image descriptor (XML) for OpenSeadragon",
        "deepzoom",
        RENDER_QUERY + THUMB_QUERY[:2],
        {"200": {"description": "the .dzi XML", "content": {"application/xml": {}}}},
    ),
    _Op(
        r"^GET /deepzoom/\{iid\}_files/",
        "One DeepZoom tile",
        "deepzoom",
        RENDER_QUERY + THUMB_QUERY[:2],
        _image_ok("the tile"),
    ),
    _Op(
        r"^GET /api/v1/images/\{iid\}$",
        "Image metadata in NGFF terms (axes, levels, chunks, channels, links)",
        "api",
        [],
        _json_ok("image description"),
    ),
    _Op(
        r"^GET /api/v1/images/\{iid\}/region$",
        "Raw pixels of one window (npy, raw little-endian bytes or TIFF)",
        "api",
        [
            _q("level", "resolution level (0 = full resolution)", _str(examples=["0"])),
            *(
                _q(axis, f"{axis}: an index or start:stop", _str(examples=["0"]))
                for axis in ("t", "c", "z")
            ),
            *(
                _q(axis, f"{axis}: an index or start:stop", _str(examples=["0:64"]))
                for axis in ("y", "x")
            ),
            _q("format", "npy (default), raw or tiff", _str(examples=["npy"])),
        ],
        {
            "200": {
                "description": "the pixels",
                "content": {
                    "application/octet-stream": {},
                    "application/x-npy": {},
                    "image/tiff": {},
                },
            },
            "304": {"description": "not modified"},
        },
    ),
    _Op(
        r"^GET /webgateway/plate/\{pid\}/(?:\{field\}/)?(?:\{acq\}/)?$",
        "An HCS plate's well grid for one field (OMERO.web plateGrid_json)",
        "webgateway",
        [
            _q("size", "thumbnail size written into each thumb_url (1-4096)", _str(r"^\d+$")),
            _q("layout", "expand (default), trim or shrink", _str(examples=["trim"])),
            CALLBACK,
        ],
        _json_ok("{grid, rowlabels, collabels, image_sizes}", (JSON, "application/javascript")),
    ),
    _Op(
        r"^GET /webgateway/plate/\{pid\}/montage\.jpg$",
        "One field of every well at thumbnail size, as one JPEG",
        "webgateway",
        [
            _q("field", "field index (default 0)", _str(r"^\d+$")),
            _q("acquisition", "only this acquisition's fields", _str(r"^\d+$")),
            _q("size", "side of a well in pixels (8-256, default 64)", _str(r"^\d+$")),
        ],
        {
            "200": {"description": "JPEG", "content": {"image/jpeg": {}}},
            "304": {"description": "not modified"},
        },
    ),
    _Op(
        r"^GET /webgateway/well/\{wid\}/children/$",
        "The field images of one well (OMERO.web listWellImages_json)",
        "webgateway",
        [_q("run", "only this acquisition's fields", _str(r"^\d+$")), CALLBACK],
        _json_ok("a list of images", (JSON, "application/javascript")),
    ),
    _Op(
        r"^GET /api/v1/plates/\{pid\}$",
        "An HCS plate: rows, columns, acquisitions, wells and their field image ids",
        "api",
        [],
        _json_ok("the plate description"),
    ),
    _Op(
        r"^GET /zarr/(?:v3/)?plates/\{pid\}\.zarr/\{key\}$",
        "A key of the plate as a read-only HCS Zarr store (v2 under /zarr/, v3 under /zarr/v3/)",
        "zarr",
        [],
        {
            "200": {"description": "metadata JSON or chunk bytes"},
            "304": {"description": "not modified"},
        },
        "Plate, row and well groups, and every field's own image store below ROW/COL/FIELD/.",
        {"key": (_str(r"^.*$", examples=[".zattrs", "A/1/.zattrs"]), "store key")},
    ),
    _Op(
        r"^GET /iiif/plates/\{pid\}/manifest\.json$",
        "A IIIF Presentation 3 manifest of a plate: one canvas per well",
        "iiif",
        [],
        _json_ok("the manifest", ("application/ld+json",)),
    ),
    _Op(
        r"^GET /zarr/(?:v3/)?\{iid\}\.zarr/\{key\}$",
        "A key of the image as a read-only Zarr store (v2 under /zarr/, v3 under /zarr/v3/)",
        "zarr",
        [],
        {
            "200": {"description": "metadata JSON or chunk bytes"},
            "206": {"description": "a byte range of it"},
            "304": {"description": "not modified"},
            "416": _error("range starts past the end"),
        },
        "Keys are parsed, never joined onto file paths; a key the store does not hold is a "
        "404 (which Zarr clients read as fill values).",
        {"key": (_str(r"^.*$", examples=[".zattrs", "0/.zarray"]), "store key")},
    ),
    _Op(
        r"^GET (?:/viewer)?/static/\{path\}$",
        "Vendored viewer and documentation assets",
        "viewer",
        [_q("v", "asset version (long-lived caching when it matches)")],
        {"200": {"description": "the file"}},
    ),
    _Op(
        r"^GET /viewer/",
        "The built-in viewer (HTML page)",
        "viewer",
        [],
        {
            "200": {"description": "HTML", "content": {"text/html": {}}},
            "404": {
                "description": "unknown image or page: an HTML page when `Accept` prefers "
                "`text/html`, else the JSON error",
                "content": {
                    "text/html": {},
                    JSON: {"schema": {"$ref": "#/components/schemas/Error"}},
                },
            },
        },
    ),
    _Op(
        r"^GET /docs/?$",
        "API documentation (this document rendered with the vendored swagger-ui)",
        "operations",
        [],
        {"200": {"description": "HTML", "content": {"text/html": {}}}},
    ),
    _Op(
        r"^OPTIONS /(?!webgateway/|omero_ms_image_region/)",
        "CORS preflight (the same on every route that answers GET)",
        "cors",
        [],
        {
            "204": {
                "description": "`Allow`; for a preflight also Access-Control-Allow-Methods "
                "(GET, HEAD, OPTIONS), -Allow-Headers and -Max-Age"
            },
            "400": _error("Access-Control-Request-Headers is not a list of header names"),
        },
        "Answered for every path a GET route matches, before admission control; an unknown "
        "path is a 404 as for GET. A preflight names `Access-Control-Request-Method`; the "
        "names in `Access-Control-Request-Headers` (e.g. `range, authorization`) are echoed.",
        {
            "tail": (_str(r"^.*$", examples=["1001/info.json"]), "any path below the prefix"),
            "key": (_str(r"^.*$", examples=["zarr.json"]), "store key"),
        },
    ),
    _Op(
        r"^GET /healthz$",
        "Liveness: 200 once started, no dependency calls",
        "operations",
        [],
        {**_json_ok("alive"), "503": _error("still starting")},
    ),
    _Op(
        r"^GET /readyz$",
        "Readiness: every dependency's state; 200 while serving (degraded included)",
        "operations",
        [],
        {
            **_json_ok("ready or degraded"),
            "503": _error("starting, warming, draining or no source"),
        },
    ),
    _Op(
        r"^GET /metrics$",
        "Prometheus metrics of this process",
        "operations",
        [],
        _json_ok("text exposition format", ("text/plain",)),
    ),
    _Op(
        r"^GET /openapi\.json$",
        "This document",
        "operations",
        [],
        _json_ok("OpenAPI 3.1"),
    ),
]


def _openapi_path(canonical: str) -> str:
    return canonical  # aiohttp's canonical form already uses {name} without the regex


def _find(method: str, path: str) -> _Op | None:
    probe = f"{method} {path}"
    for op in OPS:
        if re.search(op.pattern, probe):
            return op
    return None


def routes(app: web.Application) -> list[tuple[str, str, str]]:
    """(method, OpenAPI path, route name) of every registered route except automatic HEADs."""
    out = []
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        out.append((route.method, _openapi_path(route.resource.canonical), route.name or ""))
    return out


# Answered by a middleware (http/ops.py), not a route: documented here explicitly. OPTIONS is
# answered on every route that answers GET; one path per route family is listed.
MIDDLEWARE_OPERATIONS = [
    ("OPTIONS", "/webgateway/{tail}", "webgateway_options"),
    *(
        ("OPTIONS", path, f"{name}_options")
        for path, name in (
            ("/", "index"),
            ("/viewer/", "viewer_index"),
            ("/iiif/{version}/{tail}", "iiif"),
            ("/deepzoom/{iid}.dzi", "deepzoom_dzi"),
            ("/api/v1/images/{iid}", "api_image"),
            ("/api/v1/images/{iid}/region", "api_region"),
            ("/zarr/{iid}.zarr/{key}", "zarr_v2_key"),
            ("/zarr/v3/{iid}.zarr/{key}", "zarr_v3_key"),
        )
    ),
]


def build_spec(app: web.Application, server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI document for the routes registered in `app` that have documentation;
    `servers` names `server_url` when given (the public base, so Swagger UI's "Try it out"
    keeps a proxy's path prefix)."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, name in routes(app) + MIDDLEWARE_OPERATIONS:
        op = _find(method, path)
        if op is None:
            continue
        names = re.findall(r"\{(\w+)\}", path)
        known = {**PATH_PARAMS, **op.path}
        parameters = [
            {
                "name": n,
                "in": "path",
                "required": True,
                "description": known[n][1],
                "schema": known[n][0],
            }
            for n in names
        ]
        responses = {**op.responses}
        if op.tag in ("webgateway", "iviewer", "deepzoom", "api", "zarr", "service"):
            responses.update({k: v for k, v in ERRORS.items() if k not in responses})
            responses.setdefault("503", _error("overloaded (admission control); see Retry-After"))
        op_id = name or re.sub(r"\W+", "_", path)
        operation: dict[str, Any] = {
            "operationId": f"{method.lower()}_{op_id}",
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": parameters + op.query,
            "responses": responses,
        }
        if op.description:
            operation["description"] = op.description
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "idrserve",
            "version": __version__,
            "description": "Read-only image tiles, thumbnails and metadata for public bioimage "
            "repositories: OMERO.web webgateway URLs over OME-Zarr. Every error is JSON "
            '(`{"error", "detail", "param", "request_id"}`).',
        },
        **({"servers": [{"url": server_url}]} if server_url is not None else {}),
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {
                        "error": {"type": "string"},
                        "detail": {"type": "string"},
                        "param": {"type": "string"},
                        "request_id": {"type": "string"},
                    },
                }
            }
        },
    }
