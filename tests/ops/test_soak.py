"""A short soak (bench/soak.py): after warm-up, one worker's RSS stays flat under load.

The bounds are small (16 MiB responses, 2 MiB URL index, 64 KiB metadata) so every cache
fills during the warm-up and must evict from then on; new renders never stop (random
settings). The 10-minute run is `python bench/soak.py` (results under bench/results/).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def _soak_module() -> Any:
    spec = importlib.util.spec_from_file_location("idrserve_bench_soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_short_soak_keeps_rss_flat(demo_data: Path) -> None:
    soak = _soak_module()
    result = soak.run_soak(45, sample_s=3, users=16, zarr_root=demo_data, warmup=0.4)
    print(result.summary())
    for s in result.samples:
        print(f"  t={s.t_s}s rss={s.rss_mib} MiB requests={s.requests} p99={s.p99_ms} ms")
    assert set(result.statuses) == {"200"}, result.statuses  # no errors, no 5xx
    assert sum(result.statuses.values()) > 2000
    assert result.growth <= 0.10, result.summary()
