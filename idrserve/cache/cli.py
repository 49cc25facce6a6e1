"""`idrserve cache stats | purge | warm`: inspect, invalidate or fill the response caches."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import aiohttp

from idrserve.cache.tiered import CachePurgeError, TieredCache
from idrserve.settings import Settings


def cache_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run `idrserve cache <action>` with the settings the flags, environment and file give."""
    return asyncio.run(_cache(args, settings))


async def _warm(args: argparse.Namespace, settings: Settings) -> int:
    from idrserve.warm import urls_for_images, urls_from_access_log, warm

    base = (args.server or settings.server.local_url()).rstrip("/")
    urls: list[str] = []
    try:
        if args.from_report or args.from_log:
            urls += _learned_urls(args)
        if args.access_log:
            urls += urls_from_access_log(args.access_log)
        if args.image:
            async with aiohttp.ClientSession() as session:
                urls += await urls_for_images(session, base, args.image, args.max_side)
        if getattr(args, "plate", None):
            from idrserve.plate_warm import urls_for_plates

            async with aiohttp.ClientSession() as session:
                urls += await urls_for_plates(session, base, args.plate)
    except aiohttp.ClientConnectionError as exc:  # before OSError: it is one
        print(
            f"idrserve cache warm: cannot reach {base} ({exc}): is idrserve running there?"
            " (--server URL, or --host and --port, name it)",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"idrserve cache warm: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a report that is no report, or without nginx's figures
        print(f"idrserve cache warm: {exc}", file=sys.stderr)
        return 2
    if not urls:
        print(
            "idrserve cache warm: nothing to warm (give --image, --plate, --access-log,"
            " --from-report or --from-log)",
            file=sys.stderr,
        )
        return 2
    report = await warm(base, urls, concurrency=args.concurrency, max_bytes=args.max_bytes)
    summary = {
        "urls": len(urls),
        "done": report.done,
        "bytes": report.bytes,
        "skipped_over_budget": report.skipped,
        "failed": report.failed,
        "seconds": round(report.seconds, 2),
        "statuses": report.statuses,
    }
    print(json.dumps(summary))
    return 1 if report.failed else 0


def _learned_urls(args: argparse.Namespace) -> list[str]:
    """The hottest images' URLs from a usage report, or from logs read now."""
    from idrserve.logs.warmplan import warm_urls

    if args.from_report:
        try:
            doc = json.loads(args.from_report.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"--from-report {args.from_report}: not JSON ({exc})") from exc
        if not isinstance(doc, dict) or "sources" not in doc:
            raise ValueError(f"--from-report {args.from_report}: not an idrserve logs report")
    else:
        from idrserve.logs.cli import run_report

        doc = run_report(args.from_log, top=max(args.top, 20), quiet=False)
    return warm_urls(doc, args.top)


async def _cache(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "warm":
        return await _warm(args, settings)

    cache = TieredCache(settings.cache)
    try:
        if args.action == "purge":
            if settings.cache.dir is None and not settings.cache.redis_url:
                print(
                    "idrserve cache purge: no shared tier configured (--cache-dir or "
                    "IDRSERVE_CACHE_DIR, --redis-url or IDRSERVE_REDIS_URL); a process-local "
                    "memory cache cannot be purged from outside",
                    file=sys.stderr,
                )
                return 2
            status = 0
            for image_id in args.image:
                try:
                    generation = await cache.purge_image(image_id)
                except CachePurgeError as exc:
                    print(
                        f"image {image_id}: {exc} (generation {exc.generation})",
                        file=sys.stderr,
                    )
                    status = 1
                    continue
                print(f"image {image_id}: cache generation now {generation}")
            return status
        summary = {
            "tiers": list(cache.tiers),
            "disk": await cache.disk_stats(),
            "redis": await cache.redis_stats(count_keys=True),
        }
        print(json.dumps(summary, indent=2, default=str))
        return 0
    finally:
        await cache.aclose()
