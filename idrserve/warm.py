"""`idrserve cache warm`: fill a running server's caches before the visitors come.

Warming goes through the server's own HTTP interface, so the pixels, keys and tiers are exactly
those of a real request, and the shared tiers (disk, Redis) are filled for every worker and host.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

# Rendering URLs worth replaying from an nginx/combined access log.
_LOG_REQUEST = re.compile(r'"GET (\S+) HTTP/[\d.]+"')
_WARMABLE = re.compile(
    r"^/(webgateway|webclient)/(render_image_region|render_image|render_thumbnail|"
    r"render_birds_eye_view|get_thumbnails?)/"
)


@dataclass(slots=True)
class WarmReport:
    done: int = 0
    failed: int = 0
    bytes: int = 0
    skipped: int = 0  # not fetched: the byte budget was spent
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)


def urls_from_access_log(path: Path, limit: int = 100_000) -> list[str]:
    """Distinct rendering URLs (path and query) from an access log, most frequent first."""
    counts: dict[str, int] = {}
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = _LOG_REQUEST.search(line)
            if m and _WARMABLE.match(m.group(1)):
                counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    ranked = sorted(counts, key=lambda u: -counts[u])
    return ranked[:limit]


async def urls_for_images(
    session: aiohttp.ClientSession, base: str, image_ids: Iterable[int], max_side: int
) -> list[str]:
    """Thumbnails, the bird's-eye view and every tile of the levels at most `max_side` wide."""
    urls: list[str] = []
    for iid in image_ids:
        async with session.get(f"{base}/webgateway/imgData/{iid}/") as resp:
            if resp.status != 200:
                print(f"warm: image {iid}: imgData answered {resp.status}", file=sys.stderr)
                continue
            doc = await resp.json()
        urls += [
            f"/webgateway/render_thumbnail/{iid}/",
            f"/webgateway/render_birds_eye_view/{iid}/",
            f"/webclient/render_thumbnail/{iid}/",
        ]
        if not doc.get("tiles"):
            continue
        tw, th = doc["tile_size"]["width"], doc["tile_size"]["height"]
        width, height = doc["size"]["width"], doc["size"]["height"]
        z, t = doc["rdefs"]["defaultZ"], doc["rdefs"]["defaultT"]
        for level, scale in doc["zoomLevelScaling"].items():
            lw, lh = max(1, int(width * scale)), max(1, int(height * scale))
            if max(lw, lh) > max_side:
                continue
            for row in range(-(-lh // th)):
                for col in range(-(-lw // tw)):
                    urls.append(
                        f"/webgateway/render_image_region/{iid}/{z}/{t}/"
                        f"?tile={level},{col},{row},{tw},{th}"
                    )
    return urls


async def warm(
    base: str,
    urls: list[str],
    concurrency: int = 8,
    timeout_s: float = 60.0,
    progress: bool = True,
    session: aiohttp.ClientSession | None = None,
    max_bytes: int | None = None,
) -> WarmReport:
    """GET every URL with bounded concurrency; report counts (bodies are discarded).

    With `max_bytes`, URLs not started once that many body bytes have arrived are skipped:
    the list is in priority order, so the budget goes to the most wanted ones."""
    report = WarmReport()
    sem = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    own = session is None
    client = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
    tty = progress and sys.stderr.isatty()

    async def one(url: str) -> None:
        async with sem:
            if max_bytes is not None and report.bytes >= max_bytes:
                report.skipped += 1
                report.done += 1
                return
            try:
                async with client.get(base + url) as resp:
                    report.bytes += len(await resp.read())
                    report.statuses[resp.status] = report.statuses.get(resp.status, 0) + 1
                    if resp.status >= 400:
                        report.failed += 1
            except (aiohttp.ClientError, TimeoutError):
                report.failed += 1
            report.done += 1
            if progress and (tty or report.done % 100 == 0 or report.done == len(urls)):
                end = "\r" if tty and report.done < len(urls) else "\n"
                print(
                    f"warm: {report.done}/{len(urls)} ({report.failed} failed, "
                    f"{report.bytes} bytes)",
                    end=end,
                    file=sys.stderr,
                    flush=True,
                )

    try:
        await asyncio.gather(*(one(u) for u in urls))
    finally:
        if own:
            await client.close()
    report.seconds = time.monotonic() - started
    return report
