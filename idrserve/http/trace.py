"""What one request learnt on its way, kept as typed values in its state.

Response headers (`X-Cache`, `Server-Timing`) and the access-log line are both rendered from
a `Trace`; nothing reads its own headers back. `UrlMemo` is what a rendered answer leaves for
the fast path's URL index (http/fastpath.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(slots=True)
class Trace:
    """The cache tier that answered (memory, disk, redis, coalesced, miss, off) and the time
    of each stage that ran (source, render, encode, cache), in seconds."""

    tier: str = "-"
    timings: dict[str, float] | None = None

    def server_timing(self) -> str | None:
        """The `Server-Timing` value (durations in ms), or None when no stage was timed."""
        if not self.timings:
            return None
        return ", ".join(f"{name};dur={sec * 1000:.2f}" for name, sec in self.timings.items())

    def log_fields(self) -> dict[str, float]:
        """`{"render_ms": 0.312, …}` for the access log."""
        if not self.timings:
            return {}
        return {f"{name}_ms": round(sec * 1000, 3) for name, sec in self.timings.items()}


class UrlMemo(NamedTuple):
    """A rendered answer's resolved cache key and what it depends on, so the fast path can
    answer the same URL again without parsing it (http/fastpath.py)."""

    key: str
    image_id: int
    data_version: str
    generation: int
    # Headers of this URL's own that the shared cache entry lacks (IIIF's canonical Link).
    headers: tuple[tuple[str, str], ...] = ()
