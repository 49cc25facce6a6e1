"""Planning a cold tile's request, alone: µs from the URL's parts to the pipeline's request.

What a cold tile costs before any pixel is read: for a webgateway tile, `output_from_query`
and `plan_webgateway_region`; for a IIIF tile, `iiif.image_ask` and `plan_iiif`; each with the
cache key. Timed with `timeit` over a fixed set of distinct tiles of the benchmark image
(bench_http.py's 4096² 3-channel pyramid), for three request forms: a bare webgateway
`?tile=`, the same with OMERO.iviewer's rendering parameters, and a IIIF 3 tile. Too small to
show in a whole-server run (a few µs of a ≈ 700 µs tile), so it is measured here.

With `--baseline TREE` every round times the other checkout too, in its own process
(PYTHONPATH), interleaved, and reports this tree / baseline per form.

    python bench/bench_plan.py [--rounds 5] [--baseline TREE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
FORMS = ("webgateway, bare tile=", "webgateway, iviewer's query", "IIIF 3 tile")


def child(zarr_root: str, number: int) -> dict[str, float]:
    """µs per planned request for each form, in the tree on sys.path."""
    import asyncio
    import timeit
    from urllib.parse import unquote

    from bench_http import VIEWER_QUERY
    from multidict import MultiDict

    from idrserve.http import iiif
    from idrserve.http.iiif_params import Version
    from idrserve.http.plan import RegionAsk, plan_iiif, plan_webgateway_region
    from idrserve.http.webgateway import output_from_query
    from idrserve.settings import Settings
    from idrserve.sources import open_source

    settings = Settings(source={"zarr_root": zarr_root})
    source = open_source(settings.source)
    meta = asyncio.run(source.meta(2001))
    limits = settings.limits
    tiles = [(x, y) for y in range(4) for x in range(4)]
    viewer = MultiDict(
        (k, unquote(v)) for k, _, v in (p.partition("=") for p in VIEWER_QUERY.split("&"))
    )

    def webgateway(extra: MultiDict[str]) -> None:
        for x, y in tiles:
            query = MultiDict(extra)
            query["tile"] = f"0,{x},{y},256,256"
            output = output_from_query(query, limits, strict=False)
            ask = RegionAsk(2001, 0, 0, query.get("tile"), None, output)
            plan_webgateway_region(ask, meta, limits).key()

    version = Version("3")

    def iiif_tiles() -> None:
        for x, y in tiles:
            segments = ["2001", f"{x * 256},{y * 256},256,256", "256,", "0", "default.jpg"]
            ask = iiif.image_ask(version, segments, limits)
            plan_iiif(ask, meta, limits)[0].key()

    # The query objects themselves cost the same in both trees; time them to take them out.
    def queries_only(extra: MultiDict[str]) -> None:
        for x, y in tiles:
            query = MultiDict(extra)
            query["tile"] = f"0,{x},{y},256,256"

    runs: dict[str, tuple[Callable[[], None], Callable[[], None] | None]] = {
        FORMS[0]: (lambda: webgateway(MultiDict()), lambda: queries_only(MultiDict())),
        FORMS[1]: (lambda: webgateway(viewer), lambda: queries_only(viewer)),
        FORMS[2]: (iiif_tiles, None),
    }
    out: dict[str, float] = {}
    for form, (run, overhead) in runs.items():
        run()  # warm: metadata-derived settings, memos
        spent = min(timeit.repeat(run, number=number, repeat=3))
        if overhead is not None:
            spent -= min(timeit.repeat(overhead, number=number, repeat=3))
        out[form] = spent / (number * len(tiles)) * 1e6
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--number", type=int, default=500, help="runs of the 16 tiles a timing")
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--child", nargs=2, metavar=("ZARR_ROOT", "NUMBER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return 0
    from _harness import pinned_child
    from _results import unused
    from bench_http import write_image

    trees = {"this tree": ROOT.parent}
    if args.baseline:
        trees["baseline"] = args.baseline.resolve()
    results: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    with tempfile.TemporaryDirectory(prefix="idrserve-plan-") as tmp:
        write_image(Path(tmp) / "2001.zarr", 256, 1)
        for _ in range(args.rounds):
            for label, tree in trees.items():
                env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{ROOT}")
                child_args = ["--child", tmp, str(args.number)]
                results[label].append(pinned_child(ROOT / "bench_plan.py", child_args, env, tree))
    cmd = f"python bench/bench_plan.py --rounds {args.rounds} --number {args.number}"
    cmd += f" --baseline {args.baseline}" if args.baseline else ""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    host = platform.node() or "host"
    lines = [
        f"# Planning a cold tile's request ({stamp}, {host})",
        "",
        f"Command: `{cmd}`",
        "",
        f"µs a request, median of {args.rounds} interleaved rounds (each the best of 3 timings "
        f"of {args.number} × 16 distinct tiles), one process per tree pinned to core 0.",
        "",
        "| request form | " + " | ".join(f"{label}, µs" for label in trees) + " |",
        "|---|" + "---:|" * len(trees),
    ]
    for form in FORMS:
        cells = [f"{statistics.median(r[form] for r in results[label]):.1f}" for label in trees]
        lines.append(f"| {form} | " + " | ".join(cells) + " |")
    if args.baseline:
        lines += ["", "This tree / baseline, median of per-round ratios of the time:", ""]
        for form in FORMS:
            ratios = [
                a[form] / b[form]
                for a, b in zip(results["this tree"], results["baseline"], strict=True)
            ]
            lines.append(f"- {form}: {statistics.median(ratios):.2f}×")
    lines += ["", "Raw rounds:", "", "```json", json.dumps(results, indent=1), "```"]
    args.out.mkdir(parents=True, exist_ok=True)
    out = unused(args.out / f"plan-{host}-{stamp}.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: lines.index("Raw rounds:")]))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
