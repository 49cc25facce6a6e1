"""zarrita.js in headless Chromium reads a sharded image from idrserve, across origins.

A page served from one origin runs zarrita.js (the JavaScript Zarr reader) against a real
`idrserve serve` on another, with the suffix requests a browser reader makes for shard indexes
(`FetchStore(url, {useSuffixRequest: true})`: `Range: bytes=-N`). That header is not
CORS-safelisted, so every such read is preceded by an OPTIONS preflight, which idrserve must
answer for the browser to send it. Checked: the values zarrita decodes equal the numpy array
written with zarr-python; the shard index requests really are suffix ranges answered 206 with a
readable Content-Range; and idrserve's access log shows the preflights it answered.

zarrita and its two runtime dependencies are fetched from the npm registry at test time, pinned
and checked against their SHA-512 exactly as idrserve/vendor.py does for the viewer's assets (no
node or npm needed; `IDRSERVE_NPM_REGISTRY` points at a mirror), and kept in
~/.cache/idrserve/test-npm. The page loads them as ES modules through an import map.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from idrserve import demo
from idrserve.vendor import NpmPackage, ensure_vendored
from tests.http.test_zarr_shards import CHUNK, DATA, INDEX_BYTES, SHARD, write_sharded
from tests.integration.live_server import idrserve

from .test_viewer_browser import browser, console_problems, wait_for  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

IMAGE = 7401
DEMO = 1005  # the demo's sharded image, which docs/browser.md reads
# zarrita's runtime graph in a browser: itself, its FetchStore, and numcodecs for Blosc.
PACKAGES = (
    NpmPackage(
        "zarrita",
        "0.7.5",
        "sha512-ZriOSEne+Wf2iuM0yjDZvUKpHNlug3dO7qJ6mAxXoOgsYV18DPOkAkwB9e0rf21bHcKcOffFuwoZwn5g6pvUeA==",
        ("dist/src/", "LICENSE"),
    ),
    NpmPackage(
        "@zarrita/storage",
        "0.2.0",
        "sha512-855ZXqtnds7spnT8vNvD+MXa3QExP1m2GqShe8yt7uZXHnQLgJHgkpVwFjE1B0KDDRO0ki09hmk6OboTaIfPsQ==",
        ("dist/src/", "LICENSE"),
    ),
    NpmPackage(
        "numcodecs",
        "0.3.2",
        "sha512-6YSPnmZgg0P87jnNhi3s+FVLOcIn3y+1CTIgUulA3IdASzK9fJM87sUFkpyA+be9GibGRaST2wCgkD+6U+fWKw==",
        ("dist/", "LICENSE"),
    ),
)
IMPORTS = {
    "zarrita": "/npm/zarrita/dist/src/index.js",
    "@zarrita/storage/fetch": "/npm/@zarrita/storage/dist/src/fetch.js",
    "numcodecs/blosc": "/npm/numcodecs/dist/blosc.js",
}
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>zarrita reads idrserve</title>
<link rel="icon" href="data:,">
<script type="importmap">{"imports": %(imports)s}</script>
<script type="module">
window.b64 = (typed) => {
  const bytes = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
};
</script>
<script type="module">
%(module)s
</script>
<body></body>
"""
# The reader a page would write: every request zarrita makes is recorded with what the page
# can see of its answer (Content-Range only because idrserve exposes it).
READER = """
import * as zarr from "zarrita";

window.readImage = async (url) => {
  const requests = [];
  const store = new zarr.FetchStore(url, {
    useSuffixRequest: true,
    fetch: async (request) => {
      const response = await fetch(request);
      requests.push({
        method: request.method,
        key: new URL(request.url).pathname,
        range: request.headers.get("Range"),
        status: response.status,
        contentRange: response.headers.get("Content-Range"),
        requestId: response.headers.get("X-Request-ID"),
      });
      return response;
    },
  });
  const group = await zarr.open.v3(zarr.root(store), {kind: "group"});
  const ome = group.attrs.ome;
  const arr = await zarr.open.v3(group.resolve(ome.multiscales[0].datasets[0].path),
                                 {kind: "array"});
  const whole = await zarr.get(arr);
  const corner = await zarr.get(arr, [1, zarr.slice(250, 300), zarr.slice(450, 500)]);
  return {
    ome, dtype: arr.dtype, shape: arr.shape, chunks: arr.chunks,
    whole: {shape: whole.shape, data: b64(whole.data)},
    corner: {shape: corner.shape, data: b64(corner.data)},
    requests,
  };
};
document.body.dataset.ready = "yes";
"""
DOCS = Path(__file__).resolve().parents[2] / "docs" / "browser.md"
# After the docs' blocks, in the same module: what they read, for the test to compare.
DOCS_RESULT = """
window.docsResult = {
  axes, shape: level0.shape, chunks: level0.chunks,
  tile: {shape: tile.shape, data: b64(tile.data)},
  channels: omero.channels.map((channel) => channel.label),
  region: {shape, dtype, data: b64(pixels)},
};
"""


def npm_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "idrserve" / "test-npm"


@pytest.fixture(scope="module")
def page_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The pages and the npm packages, on an origin of their own (a port other than
    idrserve's): its URL and its directory."""
    npm = npm_cache()
    ensure_vendored(npm, packages=PACKAGES, log=False)
    site = tmp_path_factory.mktemp("zarrita-page")
    (site / "npm").symlink_to(npm, target_is_directory=True)
    (site / "index.html").write_text(PAGE % {"imports": json.dumps(IMPORTS), "module": READER})

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", site
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """idrserve over the sharded image: its URL, the image, its access log (JSON lines)."""
    data = tmp_path_factory.mktemp("zarrita-data")
    write_sharded(data / f"{IMAGE}.zarr")
    for image_id, _name, write in demo._IMAGES:
        if image_id == DEMO:
            write(data / f"{image_id}.zarr")
    log = data.parent / f"{data.name}-idrserve.log"
    with idrserve(data, log) as base:
        yield base, data / f"{IMAGE}.zarr", log


def decode(part: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(part["data"])
    return np.frombuffer(raw, "<u2").reshape(part["shape"])


def access_log(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith('{"ts"')]


def test_zarrita_reads_a_sharded_image_across_origins(
    browser: Any,  # noqa: F811 - the fixture imported above
    page_origin: tuple[str, Path],
    served: tuple[str, Path, Path],
) -> None:
    base, image, log = served
    origin, _ = page_origin
    assert origin.rsplit(":", 1)[1] != base.rsplit(":", 1)[1]  # two origins
    browser.get(f"{origin}/index.html")
    browser.set_script_timeout(60)
    ready = browser.execute_script("return document.body.dataset.ready")
    assert ready == "yes", console_problems(browser)
    out = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.readImage(arguments[0]).then(done, (e) => done({error: String(e)}));",
        f"{base}/zarr/v3/{IMAGE}.zarr",
    )
    assert "error" not in out, (out, console_problems(browser))
    assert not console_problems(browser)

    assert out["ome"]["version"] == out["ome"]["omero"]["version"] == "0.5"
    assert out["dtype"] == "uint16" and out["shape"] == list(DATA.shape)
    assert out["chunks"] == list(CHUNK)  # zarrita reports the inner chunks of a sharded array
    np.testing.assert_array_equal(decode(out["whole"]), DATA)
    np.testing.assert_array_equal(decode(out["corner"]), DATA[1, 250:300, 450:500])

    requests = out["requests"]
    shard_keys = {
        f"/zarr/v3/{IMAGE}.zarr/0/c/{c}/{y}/{x}" for c in (0, 1) for y in range(3) for x in range(2)
    }
    assert len(shard_keys) == 2 * -(-DATA.shape[1] // SHARD[1]) * -(-DATA.shape[2] // SHARD[2])
    index_reads = [r for r in requests if r["range"] == f"bytes=-{INDEX_BYTES}"]
    assert {r["key"] for r in index_reads} == shard_keys, requests
    for r in index_reads:
        assert r["method"] == "GET" and r["status"] == 206, r
        size = (image / r["key"].split(".zarr/", 1)[1]).stat().st_size
        assert r["contentRange"] == f"bytes {size - INDEX_BYTES}-{size - 1}/{size}", r
    chunk_reads = [r for r in requests if r["range"] and not r["range"].startswith("bytes=-")]
    assert chunk_reads and all(r["status"] == 206 for r in chunk_reads)
    assert all(r["status"] in (200, 206) for r in requests), requests

    # The preflights the browser sent first (at least one per shard URL: a suffix Range is not
    # CORS-safelisted, and Chromium caches a preflight per URL), answered 204 by idrserve. The
    # access log is written in batches: wait for the lines of the requests zarrita saw.
    seen = {r["requestId"] for r in requests}
    wait_for(lambda: seen <= {e["request_id"] for e in access_log(log)}, "the access log", 10)
    lines = access_log(log)
    preflights = [e for e in lines if e["method"] == "OPTIONS"]
    assert len(preflights) >= len(shard_keys), preflights
    assert {e["status"] for e in preflights} == {204}, preflights
    answered = {e["request_id"] for e in lines if e["method"] == "GET" and e["status"] == 206}
    assert {r["requestId"] for r in index_reads} <= answered


def test_the_docs_examples_run(
    browser: Any,  # noqa: F811 - the fixture imported above
    page_origin: tuple[str, Path],
    served: tuple[str, Path, Path],
) -> None:
    """The ```js blocks of docs/browser.md, in one module with the documented URL replaced by
    the server's, on the page's origin; what they read equals the stored arrays."""
    import zarr

    base, _, _ = served
    blocks = re.findall(r"```js\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert len(blocks) == 2
    module = "\n".join(blocks).replace("http://localhost:8080", base) + DOCS_RESULT
    origin, site = page_origin
    (site / "docs.html").write_text(PAGE % {"imports": json.dumps(IMPORTS), "module": module})
    browser.get(f"{origin}/docs.html")
    result = wait_for(
        lambda: browser.execute_script("return window.docsResult || null"), "the docs' blocks", 60
    )
    assert not console_problems(browser)
    stored = zarr.open_group(str(served[1].parent / f"{DEMO}.zarr"), mode="r")
    assert result["axes"] == ["c", "y", "x"] and result["shape"] == list(stored["0"].shape)
    assert result["chunks"] == list(stored["0"].chunks)
    np.testing.assert_array_equal(decode(result["tile"]), stored["0"][0, :256, :256])
    assert result["region"]["dtype"] == "<u2"
    np.testing.assert_array_equal(decode(result["region"])[0, 0], stored["2"][0])
