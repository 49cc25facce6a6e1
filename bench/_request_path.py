"""`idrserve` with the cold tile's kernel replaced by a constant body: the request path alone.

bench/bench_http.py runs it as one more server (`--request-path`): everything a cold tile
request does (HTTP parsing, middlewares, parameters, planning, cache key, single flight,
response) except reading, decoding, rendering and encoding. Its requests/s, set beside the
kernel's tiles/s, splits a cold tile's time into request handling and work. Not a server to
run for anything else: every tile it answers is the same invalid JPEG.

With `BENCH_TOUCH_BYTES=N` in the environment each "render" also copies N bytes from
one buffer to another, which costs about as much memory traffic as the real kernel (≈ 1.2 MB
for a 3-channel 256² tile: chunks, raw planes, RGB, the encoder's buffers) without its work:
docs/benchmarks.md#the-cold-tile-and-its-kernel uses it to show that the request path costs
twice as much when it alternates with that traffic.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import idrserve.service as service
from idrserve.cli import main
from idrserve.model import ImageMeta, RegionRequest

BODY = b"\xff\xd8" + b"\0" * 17_000  # about a 256^2 tile's JPEG size
TOUCH = int(os.environ.get("BENCH_TOUCH_BYTES", "0"))
SRC, DST = np.ones(TOUCH, dtype=np.uint8), np.empty(TOUCH, dtype=np.uint8)


RAW = np.zeros((1, 1, 1, 1), dtype=np.uint16)


def no_read(read: object, timings: dict[str, float]) -> np.ndarray:
    del read
    timings["source"] = 0.0
    return RAW


def constant_body(
    req: RegionRequest, meta: ImageMeta, deps: object, raw: object, timings: dict[str, float]
) -> bytes:
    del req, meta, deps, raw
    if TOUCH:
        np.copyto(DST, SRC)
    timings["render"] = timings["encode"] = 0.0
    return BODY


# Below every render path: the plain one (`_read_render_encode`) and the one in two loop turns
# (`_read_first`, tiles over `service.ONE_TURN_PIXELS`) both read with `_read` and finish with
# `_render_encode`. Until 2026-12-07 only the first was replaced, so 512² tiles, which render
# in two turns since that day, ran the real kernel here.
service._read = no_read
service._render_encode = constant_body

if __name__ == "__main__":
    sys.exit(main())
