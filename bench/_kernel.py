"""The cold tile's kernel, without HTTP: what the server could reach if requests cost nothing.

`python bench/_kernel.py ZARR_ROOT URL_FILE DURATION` (run pinned to the server's core by
bench/bench_http.py and bench/bench_iiif.py, in the same interleaved rounds as the server)
plans every URL of the file the way the webgateway or IIIF handler does, once, outside the
timing; then, for DURATION seconds,
cycles through them doing only the per-tile work the server's cold path cannot avoid: read the
chunk files, decode them (numcodecs Blosc), render the channels (idrserve's LUT kernels) and
encode the JPEG (simplejpeg): `service._read_render_encode`, the very function the server's
inline path calls. It prints one JSON line: tiles/s, the mean µs a tile of each stage the
function times (source, render, encode: what the server adds to
`idrserve_http_render_stage_seconds_total`, so the two can be set side by side), and the
SHA-256 of each URL's body so the caller can check that the kernel made the server's bytes (a
kernel that skipped work would be fast for the wrong reason).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from idrserve.http import iiif, params  # noqa: E402
from idrserve.http.iiif_params import Version  # noqa: E402
from idrserve.http.plan import Output, RegionAsk, plan_iiif, plan_webgateway_region  # noqa: E402
from idrserve.model import ImageMeta, RegionRequest, Selection  # noqa: E402
from idrserve.render import kernels  # noqa: E402
from idrserve.render.lut import LutTable  # noqa: E402
from idrserve.service import Deps, _read_render_encode  # noqa: E402
from idrserve.settings import Settings  # noqa: E402
from idrserve.sources import open_source  # noqa: E402
from idrserve.sources.zarr import ZarrSource  # noqa: E402

# A planned tile: its request, its image, its chunk read and its cache key.
Job = tuple[RegionRequest, ImageMeta, Callable[[], np.ndarray], str]


async def _plan(root: Path, urls: list[str]) -> tuple[Deps, list[Job]]:
    settings = Settings(source={"zarr_root": str(root)})
    source = open_source(settings.source)
    deps = Deps(source, LutTable(None), settings.limits, cpu_pool=None)  # type: ignore[arg-type]
    jobs: list[Job] = []
    for url in urls:
        parts = urlsplit(url)
        segs = [s for s in parts.path.split("/") if s]
        if segs[0] == "iiif":  # /iiif/{2,3}/{identifier}/{region}/{size}/{rotation}/{file}
            ask = iiif.image_ask(Version(segs[1]), segs[2:], settings.limits)
            meta = await source.meta(ask.identifier.image_id)
            req = plan_iiif(ask, meta, settings.limits)[0]
            jobs.append(_job(source, url, req, meta))
            continue
        iid, z, t = int(segs[-3]), int(segs[-2]), int(segs[-1])
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        output = Output(
            params.parse_render_overrides(
                query, max_active_channels=settings.limits.max_active_channels, strict=False
            ),
            fmt=params.parse_format(query),
            quality=params.parse_quality(query, settings.limits.default_jpeg_quality),
        )
        meta = await source.meta(iid)
        req = plan_webgateway_region(
            RegionAsk(iid, z, t, query.get("tile"), query.get("region"), output),
            meta,
            settings.limits,
        )
        jobs.append(_job(source, url, req, meta))
    return deps, jobs


def _job(source: ZarrSource, url: str, req: RegionRequest, meta: ImageMeta) -> Job:
    sel = Selection(req.level, req.t, req.z, req.z + 1, req.render.active_indices(), req.box)
    read = source.sync_reader(req.image_id, sel)
    if read is None:
        raise SystemExit(f"{url}: not a direct-read tile; the kernel covers those only")
    return req, meta, read, req.key()


def main() -> int:
    root, url_file, duration = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    urls = url_file.read_text().split()
    deps, jobs = asyncio.run(_plan(root, urls))
    kernels.warm()
    digests = {}
    for url, (req, meta, read, key) in zip(urls, jobs, strict=True):
        body = _read_render_encode(req, meta, deps, read, key).body
        digests[url] = hashlib.sha256(body).hexdigest()
    n = 0
    spent: dict[str, float] = {}
    t0 = time.perf_counter()
    end = t0 + duration
    while time.perf_counter() < end:
        for req, meta, read, key in jobs:
            timings = _read_render_encode(req, meta, deps, read, key).timings
            for stage, seconds in timings.items():
                spent[stage] = spent.get(stage, 0.0) + seconds
        n += len(jobs)
    rate = n / (time.perf_counter() - t0)
    stages_us = {stage: seconds / n * 1e6 for stage, seconds in spent.items()} if n else {}
    print(json.dumps({"rps": rate, "stages_us": stages_us, "sha256": digests}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
