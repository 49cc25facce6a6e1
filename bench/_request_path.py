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
from idrserve.model import MEDIA_TYPES, ImageMeta, RegionRequest

BODY = b"\xff\xd8" + b"\0" * 17_000  # about a 256^2 tile's JPEG size
TOUCH = int(os.environ.get("BENCH_TOUCH_BYTES", "0"))
SRC, DST = np.ones(TOUCH, dtype=np.uint8), np.empty(TOUCH, dtype=np.uint8)


def constant(req: RegionRequest, meta: ImageMeta, deps: object, read: object, key: str) -> object:
    del meta, deps, read
    if TOUCH:
        np.copyto(DST, SRC)
    timings = {"source": 0.0, "render": 0.0, "encode": 0.0}
    return service.Rendered(BODY, MEDIA_TYPES[req.fmt], key, timings)


service._read_render_encode = constant  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main())
