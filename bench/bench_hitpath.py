"""Micro-benchmark of the in-process look-ups behind one memory hit, optionally against a baseline.

A memory hit through the URL index (`http/fastpath.py`) costs four look-ups before the response
is built: the URL index, the image's purge generation, its data version (the Zarr source's
record) and the memory tier itself. This times exactly that sequence, on real objects over the
bench_cache image (1 024 URLs, one image), for a memory-only cache and for one with a disk
tier (whose purge generation comes from the generations LRU). The HTTP benchmark
(`bench_cache.py`) cannot resolve a change of a few hundred nanoseconds on a shared machine;
this can.

Each tree runs in its own process (so each imports its own idrserve), alternating
this tree / baseline for `--rounds` rounds; the median ns per hit and the ratio within each
round are reported (docs/benchmarks.md#protocol).

    python bench/bench_hitpath.py [--rounds 5] [--baseline TREE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
IMAGE = 2001


async def measure(data: Path, tmp: Path, loops: int) -> dict[str, float]:
    """ns per hit of the fast path's look-ups, best of 5 batches, per cache configuration."""
    from idrserve.cache import CacheEntry, TieredCache
    from idrserve.catalog import Catalog
    from idrserve.http.fastpath import UrlIndex
    from idrserve.settings import load_settings
    from idrserve.sources.zarr import ZarrSource

    out: dict[str, float] = {}
    configs = {
        "memory": {},
        "memory + disk": {"dir": str(tmp / "disk"), "dir_max_bytes": 1 << 30},
    }
    for name, extra in configs.items():
        settings = load_settings({"source": {"zarr_root": str(data)}, "cache": extra})
        source = ZarrSource(settings.source, Catalog(settings.source))
        cache = TieredCache(settings.cache)
        index = UrlIndex(settings.cache.url_index_entries, settings.cache.url_index_max_bytes)
        try:
            meta = await source.meta(IMAGE)
            generation = await cache.generation(IMAGE)
            urls = [
                f"/webgateway/render_image_region/{IMAGE}/0/0/?tile=0,{i},0&q=0.9"
                for i in range(1024)
            ]
            for i, url in enumerate(urls):
                key = f"{IMAGE}:{generation}:{i:032x}"
                assert cache.memory is not None
                cache.memory.put(key, CacheEntry(b"x" * 30_000, "image/jpeg"))
                index.remember(url, key, IMAGE, meta.data_version, generation)
            assert cache.memory is not None
            hit = partial(one_hit, index, cache, source, cache.memory)
            if sum(hit(url) for url in urls) != len(urls):
                raise RuntimeError("the look-ups did not all end in a memory hit")
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(loops):
                    for url in urls:
                        hit(url)
                best = min(best, time.perf_counter() - started)
            out[name] = best / (loops * len(urls)) * 1e9
        finally:
            await cache.aclose()
            await source.aclose()
    return out


def one_hit(index: Any, cache: Any, source: Any, memory: Any, url: str) -> bool:
    """What the fast path does for a memory hit before it builds the response."""
    memo = index.lookup(url)
    return (
        memo is not None
        and cache.fresh_generation(memo.image_id) == memo.generation
        and source.fresh_data_version(memo.image_id) == memo.data_version
        and memory.get(memo.key) is not None
    )


def worker(args: argparse.Namespace) -> int:
    result = asyncio.run(measure(args.data, args.data.parent, args.loops))
    print(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loops", type=int, default=200, help="passes over the URLs per batch")
    parser.add_argument("--baseline", type=Path, help="another idrserve checkout")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    from bench_http import write_image

    trees = {"this tree": REPO}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="idrserve-hitpath-") as tmp:
        data = Path(tmp) / "data"
        write_image(data / f"{IMAGE}.zarr", 256, 1)
        for _ in range(args.rounds):
            for name, tree in trees.items():
                path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH")) if p)
                cmd = [sys.executable, __file__, "--worker", "--data", str(data)]
                cmd += ["--loops", str(args.loops)]
                done = subprocess.run(
                    cmd,
                    env=dict(os.environ, PYTHONPATH=path),
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[name].append(json.loads(done.stdout.splitlines()[-1]))
    configs = list(results["this tree"][0])
    print(f"ns per memory hit, the fast path's look-ups only; {args.rounds} rounds, median")
    print()
    header = "| cache | " + " | ".join(trees) + (" | this / baseline |" if len(trees) > 1 else " |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for config in configs:
        cells = [f"{statistics.median(r[config] for r in results[n]):.0f}" for n in trees]
        if len(trees) > 1:
            ratios = [
                a[config] / b[config]
                for a, b in zip(results["this tree"], results["baseline"], strict=True)
            ]
            cells.append(f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})")
        print(f"| {config} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
