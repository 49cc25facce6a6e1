"""Real processes for the OMERO tests: the Python 3.10 venv, the stand-in OMERO, the worker.

- `omero_python` runs scripts/setup_omero.sh (idempotent; scripts/test.sh already ran it) and
  FAILS the tests when the venv cannot be built: never a skip.
- `zarr_dir` holds demo images 1002, 1003, 1004 and 1006 (written by `idrserve.demo`) plus a
  4-level synthetic pyramid 1010 with edge tiles at every level.
- `standin_data` exports each of them for the stand-in as OMERO image 9000 + (id - 1000): the
  Zarr source's own metadata (windows, colours, saved settings) becomes OMERO facts and its
  pixels the stand-in's levels, so the same image can be served from both sides and compared.
  Image 9100 has no saved rendering settings (the rendering engine's defaults apply).
- `standin` and `worker` are subprocesses on free loopback ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from idrserve.catalog import Catalog
from idrserve.demo import _IMAGES
from idrserve.model import Box, ColorModel, ImageMeta, Selection
from idrserve.settings import SourceSettings
from idrserve.sources.zarr import ZarrSource
from tests.sources.conftest import multiscales, omero_block, pyramid, ramp, write_v2

REPO = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).with_name("standin.py")
DEMO_IDS = (1002, 1003, 1004, 1006)
PYRAMID_ID = 1010
MIRRORED = (*DEMO_IDS, PYRAMID_ID)
NO_RDEF_ID = 9100
# An OMERO image that OMERO links (ExternalInfo) to the OME-Zarr of demo image 1002.
NGFF_ID = 9102
OWNER = 52
# Stand-in and worker stderr (a pipe nobody reads could fill up and stall them).
LOGS = Path(os.environ.get("TMPDIR", "/tmp")) / f"idrserve-omero-tests-{os.getpid()}.log"


def omero_id(zarr_id: int) -> int:
    return 9000 + zarr_id - 1000


@pytest.fixture(scope="session")
def omero_python() -> Path:
    """The venv interpreter with omero-py and zeroc-ice 3.6 (built if missing)."""
    venv = Path(os.environ.get("IDRSERVE_OMERO_VENV") or REPO / ".venv-omero")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup_omero.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/setup_omero.sh failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    return venv / "bin" / "python"


@pytest.fixture(scope="session")
def zarr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("omero-zarr")
    for image_id, _, write in _IMAGES:
        if image_id in DEMO_IDS:
            write(root / f"{image_id}.zarr")
    # 2000×1500, 4 levels down to 250×187: edge tiles on every level with 256² tiles.
    levels = pyramid(ramp((2, 1500, 2000), "uint16", seed=10), 4)
    attrs = {
        "multiscales": [multiscales("cyx", 4, version="0.4", pixel=0.25)],
        "omero": omero_block(["DNA", "Actin"], ["0000FF", "FFFF00"], defaultZ=0),
    }
    write_v2(
        root / f"{PYRAMID_ID}.zarr",
        levels,
        attrs,
        chunks=[(1, 256, 256)] * 4,
    )
    return root


def meta_to_facts(meta: ImageMeta, image_id: int, pixels_id: int) -> dict[str, Any]:
    """What OMERO would store for an image with these settings (the stand-in's input)."""
    px, py, pz = meta.pixel_size
    return {
        "id": image_id,
        "name": meta.name,
        "description": meta.description,
        "ownerId": OWNER,
        "pixelsId": pixels_id,
        "pixelsType": meta.pixels_type,
        "sizeX": meta.size_x,
        "sizeY": meta.size_y,
        "sizeZ": meta.size_z,
        "sizeC": meta.size_c,
        "sizeT": meta.size_t,
        # Different units on purpose: the worker converts to micrometres.
        "physicalSize": {
            "x": None if px is None else [px * 1000.0, "NANOMETER"],
            "y": None if py is None else [py, "MICROMETER"],
            "z": None if pz is None else [pz, "MICROMETER"],
        },
        "tileSize": [meta.levels[0].tile_x, meta.levels[0].tile_y],
        "tileSizes": [[lv.tile_x, lv.tile_y] for lv in meta.levels],
        "channels": [
            {
                "name": ch.label,
                "emissionWave": None
                if ch.emission_wave is None
                else [ch.emission_wave, "NANOMETER"],
                "color": list(ch.color),
                "statsMin": ch.window_min,
                "statsMax": ch.window_max,
            }
            for ch in meta.channels
        ],
        "rdef": {
            "model": "greyscale" if meta.default_model is ColorModel.GREYSCALE else "rgb",
            "defaultZ": meta.default_z,
            "defaultT": meta.default_t,
            "channels": [
                {
                    "active": ch.active,
                    "start": ch.start,
                    "end": ch.end,
                    "color": list(ch.color),
                    "family": ch.family.value,
                    "coefficient": ch.coefficient,
                    "lut": ch.lut,
                    "inverted": ch.inverted,
                }
                for ch in meta.channels
            ],
        },
    }


async def _export(zarr_dir: Path, out: Path) -> None:
    source = ZarrSource(
        SourceSettings(zarr_root=str(zarr_dir)), Catalog(SourceSettings(zarr_root=str(zarr_dir)))
    )
    try:
        for zarr_id in MIRRORED:
            meta = await source.meta(zarr_id)
            oid = omero_id(zarr_id)
            facts = meta_to_facts(meta, oid, 10_000 + oid)
            (out / f"{oid}.json").write_text(json.dumps(facts))
            channels = tuple(range(meta.size_c))
            for level, lm in enumerate(meta.levels):
                box = Box(0, 0, lm.size_x, lm.size_y)
                planes = [
                    await source.read(zarr_id, Selection(level, t, 0, meta.size_z, channels, box))
                    for t in range(meta.size_t)
                ]
                np.save(out / f"{oid}_{level}.npy", np.stack(planes))  # (t, c, z, y, x)
    finally:
        await source.aclose()


NO_RDEF_FACTS: dict[str, Any] = {
    "id": NO_RDEF_ID,
    "name": "no-settings.tif",
    "description": "an image whose owner never saved rendering settings",
    "ownerId": OWNER,
    "pixelsId": 19100,
    "pixelsType": "uint8",
    "sizeX": 70,
    "sizeY": 50,
    "sizeZ": 5,
    "sizeC": 4,
    "sizeT": 1,
    "physicalSize": {"x": [650.0, "NANOMETER"], "y": [0.65, "MICROMETER"], "z": None},
    "tileSize": [64, 64],
    "channels": [
        {"name": None, "emissionWave": [461, "NANOMETER"], "color": [0, 0, 255, 255],
         "statsMin": 3, "statsMax": 200},
        {"name": None, "emissionWave": None, "color": None, "statsMin": 0, "statsMax": 90},
        {"name": "GFP", "emissionWave": [520, "NANOMETER"], "color": None,
         "statsMin": 1, "statsMax": 254},
        {"name": None, "emissionWave": [488.5, "NANOMETER"], "color": None,
         "statsMin": None, "statsMax": None},
    ],
    "rdef": None,
}  # fmt: skip


@pytest.fixture(scope="session")
def standin_data(zarr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("standin-data")
    asyncio.run(_export(zarr_dir, out))
    (out / f"{NO_RDEF_ID}.json").write_text(json.dumps(NO_RDEF_FACTS))
    linked = json.loads((out / f"{omero_id(1002)}.json").read_text())
    linked.update(id=NGFF_ID, pixelsId=19102)
    linked["externalInfo"] = {
        "entityType": "com.glencoesoftware.ngff:multiscales",
        "entityId": 3,
        "lsid": str(zarr_dir / "1002.zarr"),
    }
    (out / f"{NGFF_ID}.json").write_text(json.dumps(linked))
    for level in range(3):
        np.save(out / f"{NGFF_ID}_{level}.npy", np.load(out / f"{omero_id(1002)}_{level}.npy"))
    rng = np.random.default_rng(9100)
    np.save(out / f"{NO_RDEF_ID}_0.npy", rng.integers(0, 256, (1, 4, 5, 50, 70), dtype=np.uint8))
    return out


def _read_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith(prefix):
        proc.kill()
        proc.communicate(timeout=10)
        raise RuntimeError(f"expected {prefix!r}, got {line!r}; see {LOGS}")
    return line[len(prefix) :].strip()


@dataclass
class StandIn:
    """The stand-in OMERO: its Ice port and its control server."""

    port: int
    control: str
    proc: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.control + "/", timeout=10) as resp:
            data: dict[str, Any] = json.load(resp)
        return data

    def post(self, path: str) -> dict[str, Any]:
        req = urllib.request.Request(self.control + path, method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as resp:
            data: dict[str, Any] = json.load(resp)
        return data


def start_standin(
    python: Path, data: Path, *, password: str = "public", latency_ms: float = 0
) -> StandIn:
    with LOGS.open("a") as log:
        proc = subprocess.Popen(
            [
                str(python),
                str(STANDIN),
                "--data",
                str(data),
                "--password",
                password,
                "--latency-ms",
                str(latency_ms),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    port, control = _read_line(proc, "READY ").split()
    return StandIn(int(port), f"http://127.0.0.1:{control}", proc)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="session")
def standin(omero_python: Path, standin_data: Path) -> Iterator[StandIn]:
    server = start_standin(omero_python, standin_data)
    try:
        yield server
    finally:
        stop(server.proc)


@dataclass
class Worker:
    url: str
    proc: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as resp:
            data: dict[str, Any] = json.load(resp)
        return data


def start_worker(
    python: Path, port: int, *extra: str, password: str = "public", listen: str = "127.0.0.1:0"
) -> Worker:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["IDRSERVE_OMERO_PASSWORD"] = password
    with LOGS.open("a") as log:
        proc = subprocess.Popen(
            [
                str(python),
                "-m",
                "idrserve.omero_worker",
                "--host",
                "tcp://127.0.0.1",
                "--port",
                str(port),
                "--listen",
                listen,
                "--parent-pid",
                str(os.getpid()),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
    return Worker(_read_line(proc, "LISTENING "), proc)


@pytest.fixture(scope="session")
def worker(omero_python: Path, standin: StandIn) -> Iterator[Worker]:
    w = start_worker(omero_python, standin.port, "--max-calls", "4", "--call-timeout", "10")
    try:
        yield w
    finally:
        stop(w.proc)


def omero_settings(**kw: Any) -> dict[str, Any]:
    """Settings groups for an app over `zarr_dir` and OMERO (`kw` → the omero group)."""
    return {"omero": kw}


__all__ = ["sys"]
