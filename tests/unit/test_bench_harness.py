"""The benchmark harness: `--variant` specs parse to settings (bad ones are refused), and a
second report the same day gets a name of its own."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


variants = _load("_variants")


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


def test_a_second_report_the_same_day_does_not_overwrite_the_first(tmp_path: Path) -> None:
    unused = _load("_results").unused
    first = tmp_path / "http-vm-2026-12-05.md"
    assert unused(first) == first
    first.write_text("committed")

    def sibling(letter: str) -> Path:
        return first.with_name(f"{first.stem}-{letter}{first.suffix}")

    second = unused(first)
    assert second == sibling("b")
    second.write_text("x")
    assert unused(first) == sibling("c")
    assert first.read_text() == "committed"
