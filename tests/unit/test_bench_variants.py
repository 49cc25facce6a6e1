"""`--variant` specs of the benchmark harness parse to settings, and bad ones are refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "_variants", Path(__file__).resolve().parents[2] / "bench" / "_variants.py"
)
assert _SPEC is not None and _SPEC.loader is not None
variants = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(variants)


def test_labels_map_to_their_settings() -> None:
    parsed = variants.parse_variants(
        [
            "3 per turn:IDRSERVE_SERVER__INLINE_RENDERS_PER_TURN=3",
            "both:IDRSERVE_SERVER__CPU_THREAD_NICE=0,IDRSERVE_SERVER__DIRECT_RENDERS=false",
        ]
    )
    assert parsed == {
        "3 per turn": {"IDRSERVE_SERVER__INLINE_RENDERS_PER_TURN": "3"},
        "both": {
            "IDRSERVE_SERVER__CPU_THREAD_NICE": "0",
            "IDRSERVE_SERVER__DIRECT_RENDERS": "false",
        },
    }


@pytest.mark.parametrize(
    "spec",
    ["no label", ":IDRSERVE_X=1", "x:", "x:PATH=/tmp", "x:IDRSERVE_X", "x:IDRSERVE_X=1,HOME=/"],
)
def test_malformed_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="expected LABEL:IDRSERVE_VAR=VALUE"):
        variants.parse_variants([spec])
