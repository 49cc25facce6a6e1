"""Route families, client kinds, image ids and cache keys of logged requests.

The same family names are used by the server's `/metrics` (`idrserve_http_requests_total`) and
by `idrserve logs report`, so a report's per-family counts can be checked against the server's
own counters. They work on raw paths (nginx's log) and on route templates (idrserve's log,
`/webgateway/imgData/{iid}/`) alike: only the path's leading words decide.
"""

from __future__ import annotations

import re
from functools import lru_cache

FAMILIES = (
    "tile",
    "plane",
    "thumbnail",
    "imgdata",
    "metadata",
    "iiif",
    "deepzoom",
    "zarr",
    "api",
    "viewer",
    "ops",
    "other",
)
# Families nginx's proxy cache stores (deploy/nginx/idrserve.conf): a cache replay and the
# working set only look at these.
CACHEABLE = frozenset({"tile", "plane", "thumbnail", "iiif", "deepzoom", "zarr"})
CLIENT_KINDS = ("browser", "library", "crawler", "other")

# A webclient share id is a number in a URL and `{share}` in a route template.
_PREFIX = re.compile(r"^/(?:webgateway|webclient)(?:/(?:\d+|\{share\}))?/([A-Za-z_]+)|^/([a-z_.]+)")
# The same without groups, for the columnar reader (idrserve/logs/columnar.py): what it
# matches is a prefix whose family is the whole path's (tested on every family).
FAMILY_PREFIX = r"^/(?:webgateway|webclient)(?:/(?:\d+|\{share\}))?/[A-Za-z_]+|^/[a-z_.]+"
_WEBGATEWAY = {
    "render_thumbnail": "thumbnail",
    "render_birds_eye_view": "thumbnail",
    "get_thumbnails": "thumbnail",
    "get_thumbnail": "thumbnail",
    "render_image": "plane",
    "render_image_download": "plane",
    "render_image_rdef": "plane",
    "render_split_channel": "plane",
    "imgData": "imgdata",
    # viewers' other JSON and lookup tables
    "getImgRDef": "metadata",
    "get_image_rdefs_json": "metadata",
    "histogram_json": "metadata",
    "luts": "metadata",
    "luts_png": "metadata",
    "open_with": "metadata",
    "api": "metadata",
    # HCS plates (docs/plates.md): the well grid, a well's fields, the montage
    "plate": "metadata",
    "well": "metadata",
}
_TOP = {
    "iiif": "iiif",
    "deepzoom": "deepzoom",
    "zarr": "zarr",
    "api": "api",
    "viewer": "viewer",
    "docs": "viewer",
    "iviewer": "imgdata",  # OMERO.iviewer's image_data: its imgData
    "omero_ms_image_region": "metadata",
    "healthz": "ops",
    "readyz": "ops",
    "metrics": "ops",
    "openapi.json": "ops",
}


@lru_cache(maxsize=4096)
def _family_of_prefix(word: str, top: bool) -> str:
    if top:
        return _TOP.get(word, "other")
    if word.startswith("render_image_region"):
        return "tile"
    return _WEBGATEWAY.get(word, "other")


def family(path: str) -> str:
    """The route family of a raw path or an idrserve route template."""
    m = _PREFIX.match(path)
    if m is None:
        return "other"
    if m.group(1) is not None:
        return _family_of_prefix(m.group(1), False)
    return _family_of_prefix(m.group(2), True)


_CRAWLER = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|bingpreview|facebookexternalhit|archive\.org|"
    r"heritrix|httrack|semrush|ahrefs|petalbot|bytespider|gptbot|claudebot|ccbot",
    re.I,
)
_LIBRARY = re.compile(
    r"python|aiohttp|requests|urllib|httpx|fsspec|zarr|dask|napari|java/|qupath|okhttp|"
    r"curl/|wget/|go-http-client|libwww|node-fetch|axios|locust|julia|matlab|r-curl|"
    r"tensorstore|jupyter",
    re.I,
)


@lru_cache(maxsize=8192)
def client_kind(user_agent: str) -> str:
    """browser (viewers in a web page), library (notebooks, scripts, desktop tools),
    crawler (search engines, archivers, scrapers), or other (no or an unknown agent)."""
    if not user_agent or user_agent == "-":
        return "other"
    if _CRAWLER.search(user_agent):
        return "crawler"
    if _LIBRARY.search(user_agent):
        return "library"
    if user_agent.startswith("Mozilla/") or "AppleWebKit" in user_agent:
        return "browser"
    return "other"


_IMAGE_ID = re.compile(
    r"^/(?:webgateway|webclient)(?:/\d+)?/[A-Za-z_]+/(\d{1,19})/"
    r"|^/(?:iiif/[23]|api/v1/images|viewer)/(\d{1,19})"
    r"|^/zarr/(?:v3/)?(\d{1,19})\.zarr/"
    r"|^/deepzoom/(\d{1,19})[._/]"
)
# The same without groups (columnar reader): the id is the last digits of what it matches.
IMAGE_PREFIX = (
    r"^/(?:webgateway|webclient)(?:/\d+)?/[A-Za-z_]+/\d{1,19}/"
    r"|^/(?:iiif/[23]|api/v1/images|viewer)/\d{1,19}"
    r"|^/zarr/(?:v3/)?\d{1,19}\.zarr/"
    r"|^/deepzoom/\d{1,19}[._/]"
)


def image_id(path: str) -> int | None:
    """The image a raw request path is about, when its URL names one."""
    m = _IMAGE_ID.match(path)
    if m is None:
        return None
    return int(m.group(1) or m.group(2) or m.group(3) or m.group(4))


_BUSTER = re.compile(r"(?:^|&)(?:_|rev)=[^&]*")


def cache_key(target: str) -> str:
    """nginx's proxy-cache key of a request target: the path and query without the
    cache busters (`_=`, `rev=`) viewers append (deploy/nginx/idrserve.conf)."""
    path, sep, query = target.partition("?")
    if not sep or ("_=" not in query and "rev=" not in query):
        return target
    query = _BUSTER.sub("", query).lstrip("&")
    return f"{path}?{query}" if query else path
