"""A histogram kept as plain integers on the request path, exposed by collectors at scrape time.

prometheus-client's own `Histogram` takes a lock per observation; the collectors here
(`sources/metrics.py`, `catalog/metrics.py`) read these counts only when `/metrics` is scraped.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(slots=True)
class Histogram:
    """Bucket counts (not cumulative; the last bucket is +Inf) and the sum of observations."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total_s += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out
