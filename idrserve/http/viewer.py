"""The built-in browser pages: `/viewer/` (image index), `/viewer/{id}`, `/docs`, static files.

The pages are static HTML under `idrserve/static/` with a few `{{name}}` placeholders filled
here (escaped); everything else happens in the browser. The viewer is OpenSeadragon over the
webgateway tiles this server already answers, so it exercises exactly the URLs OMERO's own
viewers use. OpenSeadragon and Swagger UI are vendored from the npm registry at build time
(`idrserve/vendor.py`), never loaded from a CDN: when they are missing (a source checkout that
was never built) the pages answer a JSON 503 that says how to build them.

Static files are addressed as `/viewer/static/<path>?v=<content hash>`; a request carrying
the current hash may be cached for a year, anything else is revalidated, so a new release never
meets a stale script.

Every link a page holds, and every URL its scripts build, starts with the public path prefix
(`urls.public_prefix`, in `{{base}}` and `<body data-base>`), so the pages work under a proxy
that serves idrserve below a path such as `/idr/`.
"""

from __future__ import annotations

import hashlib
import html
import mimetypes
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from idrserve import __version__, vendor
from idrserve.catalog import CatalogPage
from idrserve.errors import IdrServeError, NotFound
from idrserve.http.keys import DEPS
from idrserve.http.middleware import log_error, request_id
from idrserve.http.params import parse_page
from idrserve.http.urls import link_cache_control, public_prefix

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_ROOT = web.AppKey("static_root", Path)
_HASHES = web.AppKey("static_hashes", dict)
PageGetter = Callable[[web.Request, int, int], Awaitable[CatalogPage]]

LONG_CACHE = "public, max-age=31536000, immutable"
PAGE_CACHE = "no-cache"
# The pages load nothing from anywhere but this server; the browser enforces it.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'"
)
OSD_IMAGES = "vendor/openseadragon/build/openseadragon/images/"
# Under /viewer/, which deploy/nginx routes to idrserve (OMERO.web owns /static/).
STATIC_PREFIX = "/viewer/static/"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True, slots=True)
class _Listing:
    """Where the index page gets a page of the served image ids (the catalog lives in app.py)."""

    page: PageGetter


_LISTING = web.AppKey("viewer_listing", _Listing)


class AssetsMissing(IdrServeError):
    """The vendored npm assets are not there: the package was built without them."""

    status = 503
    code = "viewer_assets_missing"


def prefers_html(request: web.Request) -> bool:
    """True when the client ranks `text/html` at least as high as `application/json`.

    Browsers list text/html explicitly; API clients send `*/*`, JSON or nothing, and keep
    getting JSON. A wildcard never counts as asking for HTML.
    """
    html_q = json_q = 0.0
    for part in request.headers.get("Accept", "").split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        q = 1.0
        for f in fields[1:]:
            name, _, value = f.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == "text/html":
            html_q = max(html_q, q)
        elif media == "application/json":
            json_q = max(json_q, q)
    return html_q > 0 and html_q >= json_q


def _root(app: web.Application) -> Path:
    return app[STATIC_ROOT]


def asset_url(app: web.Application, rel: str) -> str:
    """`/viewer/static/<rel>?v=<first 12 hex of its SHA-256>`, hashed once per app (pages put
    the public prefix in front)."""
    hashes: dict[str, str] = app[_HASHES]
    digest = hashes.get(rel)
    if digest is None:
        path = _root(app) / rel
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        except OSError:
            digest = "missing"
        hashes[rel] = digest
    return f"{STATIC_PREFIX}{rel}?v={digest}"


def _require_assets(app: web.Application, *names: str) -> None:
    gone = vendor.missing(_root(app) / "vendor", names)
    if gone:
        raise AssetsMissing(
            f"the browser assets {', '.join(gone)} are not installed; they are fetched from "
            "the npm registry when the package is built: run `pip install .` (or `pip install "
            "-e .`), or `python -m idrserve.vendor` in a source checkout "
            "(IDRSERVE_NPM_REGISTRY selects a mirror)",
            internal=f"looked in {_root(app) / 'vendor'}",
        )


def _render(app: web.Application, template: str, values: dict[str, str]) -> str:
    """Fill every `{{name}}` of a page under the static root from `values`, HTML-escaped."""
    text = (_root(app) / template).read_text(encoding="utf-8")

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"{template}: no value for {{{{{name}}}}}")
        return html.escape(values[name], quote=True)

    return _PLACEHOLDER.sub(fill, text)


def _page(request: web.Request, body: str) -> web.Response:
    # Private when the links came from forwarded headers: a shared copy would send another
    # proxy's users to the wrong prefix.
    cache_control = link_cache_control(request, PAGE_CACHE)
    return web.Response(
        text=body,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": cache_control, "Content-Security-Policy": CSP},
    )


def _common(request: web.Request) -> dict[str, str]:
    """The values every page has: the public prefix (`base`), the version and the styles."""
    base = public_prefix(request)
    app = request.app
    osd_js = asset_url(app, "vendor/openseadragon/build/openseadragon/openseadragon.min.js")
    return {
        "base": base,
        "version": __version__,
        "css": base + asset_url(app, "viewer.css"),
        "osd_js": base + osd_js,
        "osd_images": f"{base}{STATIC_PREFIX}{OSD_IMAGES}",
    }


def page_links(page: CatalogPage) -> dict[str, int]:
    """The offsets of the first, previous and next pages (those that exist)."""
    links = {"first": 0}
    if page.offset > 0:
        links["prev"] = max(0, page.offset - page.limit)
    if page.offset + page.limit < page.total:
        links["next"] = page.offset + page.limit
    return links


def index_html(request: web.Request, page: CatalogPage) -> str:
    """One page of the image index: a card per image with its thumbnail, linking to its
    viewer, and links to the neighbouring pages (of the path asked for, `/` or `/viewer/`).

    A card holds only the id: `index.js` fills in each card's name, size and channel count
    from the image's imgData once the card scrolls into view, so the page costs one catalog
    slice whatever the images are, and no metadata is read for cards nobody looks at.
    """
    values = _common(request)
    base = html.escape(values["base"], quote=True)
    cards = "\n".join(
        f'    <li data-image-id="{i}"><a href="{base}/viewer/{i}">'
        f'<img src="{base}/webgateway/render_thumbnail/{i}/" alt="image {i}" loading="lazy" '
        f'width="96" height="96"><span class="card-id">{i}</span>'
        '<span class="card-name"></span><span class="card-size"></span></a></li>'
        for i in page.ids
    )
    first = page.offset + 1 if page.ids else page.offset
    shown = f"{first}–{page.offset + len(page.ids)} of {page.total}"
    values |= {
        "count": str(page.total),
        "shown": shown,
        "index_js": values["base"] + asset_url(request.app, "index.js"),
    }
    text = _render(request.app, "index.html", values)
    nav = []
    for rel, label in (("prev", "← previous"), ("next", "next →")):
        offset = page_links(page).get(rel)
        if offset is not None:
            path = f"{values['base']}{request.path}?offset={offset}&limit={page.limit}"
            nav.append(f'<a rel="{rel}" href="{html.escape(path, quote=True)}">{label}</a>')
    return text.replace("<!--images-->", cards, 1).replace("<!--pager-->", " ".join(nav), 1)


async def index_page(request: web.Request, page: CatalogPage) -> web.Response:
    """`/` for browsers and `/viewer/`: one page of the served images with thumbnails."""
    response = _page(request, index_html(request, page))
    response.headers["Vary"] = "Accept"
    return response


async def viewer_index(request: web.Request) -> web.Response:
    """`/viewer/`: the index page whatever the client accepts (`/` negotiates)."""
    offset, limit = parse_page(request.query)
    page = await request.app[_LISTING].page(request, offset, limit)
    return await index_page(request, page)


# The viewer's scripts, in load order: each adds to `window.idrserveViewer`, viewer.js starts.
VIEWER_SCRIPTS = ("viewer-state.js", "viewer-channels.js", "viewer-panels.js", "viewer.js")


async def viewer_page(request: web.Request) -> web.Response:
    """`/viewer/{id}`: OpenSeadragon over webgateway tiles; 404 for an unknown image (an HTML
    page for browsers, the usual JSON for API clients)."""
    iid = int(request.match_info["iid"])
    try:
        await request.app[DEPS].source.meta(iid)
    except NotFound as exc:
        return not_found(request, exc)
    _require_assets(request.app, "openseadragon")
    values = _common(request)
    values["image_id"] = str(iid)
    for name in VIEWER_SCRIPTS:
        key = name.removesuffix(".js").replace("-", "_") + "_js"
        values[key] = values["base"] + asset_url(request.app, name)
    return _page(request, _render(request.app, "viewer.html", values))


async def viewer_missing(request: web.Request) -> web.Response:
    """Any other path under `/viewer/`: a 404, as a page for browsers."""
    return not_found(request, NotFound(f"no such page: {request.path}"))


def not_found(request: web.Request, exc: NotFound) -> web.Response:
    """The 404 page for a browser (`prefers_html`); API clients get the JSON error."""
    if not prefers_html(request):
        raise exc
    log_error(request, exc)  # the catalogued-but-missing case has an internal side to log
    values = _common(request) | {"detail": exc.detail, "request_id": request_id(request)}
    response = _page(request, _render(request.app, "notfound.html", values))
    response.set_status(404)
    response.headers["Vary"] = "Accept"
    return response


async def docs_page(request: web.Request) -> web.Response:
    """`/docs`: Swagger UI (vendored) over this server's `/openapi.json`."""
    _require_assets(request.app, "swagger-ui-dist")
    app, base = request.app, public_prefix(request)
    values = {
        "version": __version__,
        "spec_url": f"{base}/openapi.json",
        "swagger_css": base + asset_url(app, "vendor/swagger-ui-dist/swagger-ui.css"),
        "swagger_js": base + asset_url(app, "vendor/swagger-ui-dist/swagger-ui-bundle.js"),
        "docs_js": base + asset_url(app, "docs.js"),
    }
    return _page(request, _render(app, "docs.html", values))


async def static_file(request: web.Request) -> web.StreamResponse:
    """A file under the static root; a year of caching when `v` matches its content hash."""
    rel = request.match_info["path"]
    root = _root(request.app).resolve()
    parts = rel.split("/")
    if (
        "\x00" in rel  # a NUL makes the path functions raise ValueError (was a 500)
        or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
        or rel.endswith(".html")
    ):
        raise NotFound(f"no such static file: {rel}")
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"no such static file: {rel}")
    fresh = request.query.get("v") == asset_url(request.app, rel).rpartition("v=")[2]
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return web.FileResponse(
        path,
        headers={
            "Cache-Control": LONG_CACHE if fresh else PAGE_CACHE,
            "Content-Type": ctype,
            "X-Content-Type-Options": "nosniff",
        },
    )


def add_routes(app: web.Application, page: PageGetter, static_root: Path | None = None) -> None:
    """Register the pages; `page(request, offset, limit)` lists served ids for the index."""
    app[STATIC_ROOT] = static_root or STATIC_DIR
    app[_HASHES] = {}
    app[_LISTING] = _Listing(page)
    router = app.router
    router.add_get("/viewer/", viewer_index, name="viewer_index")
    router.add_get(r"/viewer/{iid:\d{1,19}}", viewer_page, name="viewer")
    router.add_get(r"/viewer/{iid:\d{1,19}}/", viewer_page, name="viewer_slash")
    router.add_get("/docs", docs_page, name="docs")
    router.add_get("/docs/", docs_page, name="docs_slash")
    router.add_get(STATIC_PREFIX + "{path:.+}", static_file, name="viewer_static")
    router.add_get("/viewer/{tail:.+}", viewer_missing, name="viewer_missing")
