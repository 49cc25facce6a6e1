"""`--resume`: a conversion killed mid-way, or ended abruptly after N bands, completes with
`--resume` into exactly the bytes of an uninterrupted conversion, re-writing only what its
journal cannot vouch for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tifffile

from tests.convert.conftest import pattern, write_ome_subifds

REPO = Path(__file__).resolve().parents[2]
JOURNAL = ".idrserve-convert.jsonl"


def idrserve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "idrserve", "convert", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def partial(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def journal_bands(out: Path) -> int:
    try:
        lines = (partial(out) / JOURNAL).read_text().splitlines()
    except OSError:
        return 0
    return max(0, len(lines) - 1)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "cells.ome.tif"
    write_ome_subifds(path, pattern((2, 2, 400, 600), "uint16"), levels=2)
    return path


@pytest.fixture(scope="module")
def reference(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("reference") / "ref.zarr"
    done = idrserve(str(source), str(out), "--chunks", "32", "--quiet", "--workers", "1")
    assert done.returncode == 0, done.stderr
    return files(out)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_abrupt_end_then_resume_is_identical(
    source: Path, tmp_path: Path, version: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    args = ["--chunks", "32", "--ngff", version]
    if version == "0.5":
        args += ["--shard", "64"]
    reference = tmp_path_factory.mktemp("ref") / "ref.zarr"
    whole = idrserve(str(source), str(reference), *args)
    assert whole.returncode == 0
    out = tmp_path / "cells.zarr"
    crashed = idrserve(str(source), str(out), *args, "--crash-after-bands", "20")
    assert crashed.returncode == 75
    assert not out.exists()  # nothing at the output path until it is complete
    assert journal_bands(out) == 20
    resumed = idrserve(str(source), str(out), *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["bands_resumed"] == 20
    assert summary["bands_written"] == json.loads(whole.stdout)["bands_written"] - 20
    assert files(out) == files(reference)
    assert not partial(out).exists()


def test_kill_mid_way_then_resume_is_identical(
    source: Path, tmp_path: Path, reference: dict[str, bytes]
) -> None:
    out = tmp_path / "cells.zarr"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "idrserve", "convert", str(source), str(out)]
    proc = subprocess.Popen([*cmd, "--chunks", "32", "--quiet", "--workers", "1"], env=env)
    try:
        deadline = time.monotonic() + 60
        while journal_bands(out) < 10 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    if proc.returncode == 0:
        pytest.fail("the conversion finished before it could be killed")
    assert not out.exists()
    written = journal_bands(out)
    assert written >= 10
    resumed = idrserve(str(source), str(out), "--chunks", "32", "--resume", "--workers", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["bands_resumed"] >= written - 2  # a torn last line
    assert files(out) == reference


def test_resume_rewrites_a_band_whose_chunk_changed(
    source: Path, tmp_path: Path, reference: dict[str, bytes]
) -> None:
    out = tmp_path / "cells.zarr"
    args = ["--chunks", "32", "--workers", "1"]
    assert idrserve(str(source), str(out), *args, "--crash-after-bands", "12").returncode == 75
    lines = (partial(out) / JOURNAL).read_text().splitlines()
    key = next(iter(json.loads(lines[3])["crc"]))
    chunk = partial(out) / key
    chunk.write_bytes(chunk.read_bytes()[:-7])  # torn, as a crash mid-write leaves it
    resumed = idrserve(str(source), str(out), *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["bands_resumed"] == 11
    assert files(out) == reference


def test_resume_refuses_other_options(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "cells.zarr"
    crashed = idrserve(str(source), str(out), "--chunks", "32", "--crash-after-bands", "3")
    assert crashed.returncode == 75
    refused = idrserve(str(source), str(out), "--chunks", "64", "--resume")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "other options" in refused.stderr
    assert partial(out).exists() and not out.exists()  # kept for a resume with the right options


def test_without_resume_a_stale_partial_is_discarded(
    source: Path, tmp_path: Path, reference: dict[str, bytes]
) -> None:
    out = tmp_path / "cells.zarr"
    args = ["--chunks", "32", "--workers", "1"]
    assert idrserve(str(source), str(out), *args, "--crash-after-bands", "5").returncode == 75
    again = idrserve(str(source), str(out), *args, "--quiet")
    assert again.returncode == 0
    assert "discarding" in again.stderr and again.stderr.count("\n") == 1
    assert files(out) == reference


def test_resume_with_nothing_to_resume_converts(source: Path, tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "x.tif", pattern((50, 60), "uint8"))
    done = idrserve(str(tmp_path / "x.tif"), str(tmp_path / "x.zarr"), "--resume", "--quiet")
    assert done.returncode == 0 and done.stderr == ""
