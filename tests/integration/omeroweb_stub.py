"""OMERO.web replaced by a counter: it serves OMERO.iviewer's page and static files, and records
every request it gets, so a browser session through nginx shows what still reaches OMERO.web.

The page is what iviewer's `index` view renders for `/iviewer/?images=<id>`: the stylesheet and
scripts its template names (read from the wheel's template, in its order, with the same
`?_iviewer-<version>` suffix) after an inline script that sets `window.INITIAL_REQUEST_PARAMS`
(the view's `params`, as strings, as Django writes them) and `window.OME`. The keys are the
ones the view sets on a site without OMERO.figure and without a URL prefix
(`PAGE_KEYS_NOT_SET`); `page_keys_missing` checks that list against the wheel's view.

Every other request is counted. Those the shipped nginx configuration leaves to OMERO.web on
purpose (`KEPT`, from docs/iviewer.md) get the answer OMERO.web gives for an image with no
plane timings and no container, so iviewer goes on as on a real site; anything else is a 404.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from .iviewer_wheel import STATIC, TEMPLATE, VERSION, VIEWS

# Keys iviewer's view sets only on some sites: the image id from a /webclient/img_detail/<id>/
# URL (ours comes from the query string), OMERO.figure's URL, and a FORCE_SCRIPT_NAME prefix.
PAGE_KEYS_NOT_SET = frozenset({"IMAGES", "OMERO_FIGURE", "URI_PREFIX"})
STATIC_URL = "/static/"
# What OMERO.web would still answer in an iviewer session behind deploy/nginx, with its
# answer, for a check that fails loudly if one comes back: nothing, since idrserve answers
# delta_t/ and (for iviewer's pages) paths_to_object (docs/iviewer.md).
KEPT: tuple[tuple[str, re.Pattern[str], object], ...] = ()
# The template's `{% static 'omero_iviewer/…'|add:iviewer_url_suffix %}` references.
STATIC_REF = re.compile(r"""\{%\s*static\s+'([^']+)'\s*\|\s*add:iviewer_url_suffix\s*%\}""")


@dataclass(frozen=True)
class StubRequest:
    method: str
    path: str  # with the query string
    kind: str  # "page", "static", "browser" (favicon) or "work" (anything OMERO.web would do)
    status: int
    kept: str | None = None  # the KEPT entry it matched

    def __str__(self) -> str:
        kept = f" (kept on OMERO.web: {self.kept})" if self.kept else ""
        return f"{self.method} {self.path} -> {self.status}{kept}"


def page_params(query: dict[str, str]) -> dict[str, str]:
    """`window.INITIAL_REQUEST_PARAMS` as iviewer's view builds it, values as Django prints them."""
    params = {"VERSION": VERSION, "OMERO_VERSION": "5.6.14"}
    params |= {key.upper(): value for key, value in query.items() if value}
    params |= {
        "INTERPOLATE": "True",
        "WEBGATEWAY": "/webgateway/",
        "WEBCLIENT": "/webclient/",
        "WEB_API_BASE": "/api/v0/",
        "ROI_PAGE_SIZE": "500",
        "MAX_PROJECTION_BYTES": "268435456",
        "MAX_ACTIVE_CHANNELS": "10",
        "NODEDESCRIPTORS": "None",
        "ROI_COLOR_PALETTE": "",
        "SHOW_PALETTE_ONLY": "False",
        "ENABLE_MIRROR": "False",
    }
    return params


def page_keys_missing(wheel_root: Path) -> set[str]:
    """Keys iviewer's `index` view sets that the stub page does not."""
    views = (wheel_root / VIEWS).read_text()
    index = views[views.index("def index(") : views.index("\ndef ", views.index("def index("))]
    keys = set(re.findall(r"params\['([A-Z_]+)'\]\s*=", index))
    return keys - set(page_params({})) - PAGE_KEYS_NOT_SET


def render_page(wheel_root: Path, query: dict[str, str]) -> str:
    template = (wheel_root / TEMPLATE).read_text()
    suffix = f"?_iviewer-{VERSION}"
    refs = STATIC_REF.findall(template)
    styles = [
        f'<link rel="stylesheet" href="{STATIC_URL}{r}{suffix}">'
        for r in refs
        if r.endswith(".css")
    ]
    scripts = [
        f'<script src="{STATIC_URL}{r}{suffix}"></script>' for r in refs if r.endswith(".js")
    ]
    assert len(styles) + len(scripts) == len(refs), refs
    # The bundle installs OME's open-with helpers itself; the page only provides the object and
    # the (empty, no plugins here) OPEN_WITH list the template starts with.
    boot = (
        f"window.INITIAL_REQUEST_PARAMS = {json.dumps(page_params(query))};\n"
        "window.OME = {OPEN_WITH: []};"
    )
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        + "\n".join(styles)
        + f"\n<script>\n{boot}\n</script>\n<title>OMERO.iviewer</title>\n</head>\n"
        + '<body class="container-fluid">\n'
        + "\n".join(scripts)
        + "\n</body>\n</html>\n"
    )


@dataclass
class OmeroWebStub:
    """The stand-in, on its own event loop in a thread; `requests` fills as the browser works."""

    wheel_root: Path
    port: int
    requests: list[StubRequest] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def work(self) -> list[StubRequest]:
        """Requests OMERO.web would have had to answer itself (not the page or its files)."""
        with self._lock:
            return [r for r in self.requests if r.kind == "work"]

    def snapshot(self) -> list[StubRequest]:
        with self._lock:
            return list(self.requests)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        static_root = (self.wheel_root / STATIC).resolve()
        response: web.StreamResponse
        kept = None
        if request.method == "GET" and path == "/iviewer/":
            kind = "page"
            body = render_page(self.wheel_root, dict(request.query))
            response = web.Response(text=body, content_type="text/html")
        elif request.method == "GET" and path.startswith(STATIC_URL + "omero_iviewer/"):
            kind = "static"
            file = (static_root / path.removeprefix(STATIC_URL + "omero_iviewer/")).resolve()
            if file.is_file() and file.is_relative_to(static_root):
                response = web.FileResponse(file)
            else:
                response = web.Response(status=404, text="no such static file")
        elif path == "/favicon.ico":
            # Chromium asks every site for it: the browser's request, not iviewer's work.
            kind = "browser"
            response = web.Response(status=204)
        else:
            kind = "work"
            kept = next((k for k in KEPT if k[1].match(path) and request.method == "GET"), None)
            if kept is not None:
                response = web.json_response(kept[2])
            else:
                response = web.json_response(
                    {"stand_in": "OMERO.web", "detail": "counted, not answered"}, status=404
                )
        with self._lock:
            self.requests.append(
                StubRequest(
                    request.method,
                    request.path_qs,
                    kind,
                    response.status,
                    None if kept is None else kept[0],
                )
            )
        return response

    def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="omeroweb-stub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
