"""LUT files: the three ImageJ formats, the built-in set, name safety and the JSON listing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from idrserve.render.lut import BUILTIN_DIR, LutFormatError, LutTable, luts_json, parse_lut
from idrserve.render.make_luts import BUILTINS, encode_lut, generate

REQUIRED = [
    "grays.lut", "red.lut", "green.lut", "blue.lut", "cyan.lut", "magenta.lut", "yellow.lut",
    "fire.lut", "ice.lut", "cool.lut", "hilo.lut", "spectrum.lut", "16_colors.lut",
    "red_hot.lut", "glow.lut", "thermal.lut", "5_ramps.lut", "3-3-2_rgb.lut",
]  # fmt: skip


def ramp_table() -> np.ndarray:
    """R = i, G = 255 − i, B = i // 2."""
    i = np.arange(256)
    return np.stack([i, 255 - i, i // 2], axis=1).astype(np.uint8)


def test_parse_raw_768() -> None:
    table = ramp_table()
    data = bytes(table[:, 0]) + bytes(table[:, 1]) + bytes(table[:, 2])
    parsed = parse_lut(data)
    assert parsed.shape == (256, 3)
    assert parsed[10].tolist() == [10, 245, 5]
    assert (parsed == table).all()


def test_parse_nih_binary_with_header() -> None:
    table = ramp_table()
    header = b"ICOL" + (1).to_bytes(2, "big") + (256).to_bytes(2, "big") + bytes(24)
    assert len(header) == 32
    data = header + bytes(table[:, 0]) + bytes(table[:, 1]) + bytes(table[:, 2])
    assert (parse_lut(data) == table).all()


def test_parse_nih_binary_with_fewer_colours_interpolates() -> None:
    # 2 colours: black and white → stretched to 256 entries; entry i sits at i·2/256 of the way
    header = b"ICOL" + (1).to_bytes(2, "big") + (2).to_bytes(2, "big") + bytes(24)
    data = header + bytes([0, 255]) * 3
    parsed = parse_lut(data)
    assert parsed[0].tolist() == [0, 0, 0]
    assert parsed[128].tolist() == [255, 255, 255]  # 128·2/256 = 1.0 → second colour
    assert parsed[64].tolist() == [127, 127, 127]  # halfway: int(0.5·255) = 127


def test_parse_text_three_columns_with_header() -> None:
    table = ramp_table()
    lines = ["Red\tGreen\tBlue"] + [f"{r}\t{g}\t{b}" for r, g, b in table.tolist()]
    parsed = parse_lut("\n".join(lines).encode())
    assert (parsed == table).all()


def test_parse_text_four_columns_with_index() -> None:
    table = ramp_table()
    lines = ["Index Red Green Blue"] + [
        f"{i} {r} {g} {b}" for i, (r, g, b) in enumerate(table.tolist())
    ]
    parsed = parse_lut("\r\n".join(lines).encode())
    assert parsed[200].tolist() == [200, 55, 100]


def test_parse_text_without_header() -> None:
    lines = [f"{i} {i} {i}" for i in range(256)]
    assert parse_lut("\n".join(lines).encode())[17].tolist() == [17, 17, 17]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01" * 10,  # short binary
        "\n".join("1 2 3" for _ in range(255)).encode(),  # 255 rows
        "\n".join("1 2" for _ in range(256)).encode(),  # 2 columns
        "\n".join("1 2 300" for _ in range(256)).encode(),  # out of range
    ],
)
def test_parse_rejects_malformed(data: bytes) -> None:
    with pytest.raises(LutFormatError):
        parse_lut(data)


def test_builtin_set_has_required_names() -> None:
    table = LutTable(None)
    names = table.names()
    assert names == sorted(names)
    for name in REQUIRED:
        rgb = table.get(name)
        assert rgb is not None, name
        assert rgb.shape == (256, 3)
        assert rgb.dtype == np.uint8


def must_get(table: LutTable, name: str) -> np.ndarray:
    rgb = table.get(name)
    assert rgb is not None, name
    return rgb


def test_builtin_shapes() -> None:
    table = LutTable(None)
    grays, red, hilo, rgb332 = (
        must_get(table, n) for n in ("grays.lut", "red.lut", "hilo.lut", "3-3-2_rgb.lut")
    )
    assert grays[100].tolist() == [100, 100, 100]
    assert red[100].tolist() == [100, 0, 0]
    assert hilo[0].tolist() == [0, 0, 255]
    assert hilo[255].tolist() == [255, 0, 0]
    assert hilo[1].tolist() == [1, 1, 1]
    # 3-3-2: index 0b111_000_00 = 224 → pure red; 0b000_000_11 = 3 → pure blue
    assert rgb332[224].tolist() == [255, 0, 0]
    assert rgb332[3].tolist() == [0, 0, 255]


def test_committed_builtins_match_generator() -> None:
    generated = generate()
    committed = {p.name: p.read_bytes() for p in BUILTIN_DIR.glob("*.lut")}
    assert committed == generated
    assert set(generated) == set(BUILTINS)


def test_directory_loads_all_formats_recursively(tmp_path: Path) -> None:
    table = ramp_table()
    (tmp_path / "raw.lut").write_bytes(encode_lut(table))
    sub = tmp_path / "ncsa_paledit"
    sub.mkdir()
    text = "\n".join(f"{r} {g} {b}" for r, g, b in table.tolist())
    (sub / "text.lut").write_text(text)
    (tmp_path / "broken.lut").write_bytes(b"nonsense")
    (tmp_path / "notes.txt").write_text("not a LUT")
    luts = LutTable(tmp_path, builtins=False)
    assert luts.names() == ["raw.lut", "text.lut"]
    assert luts.get("text.lut") is not None
    assert {e.name: e.path for e in luts.paths()} == {
        "raw.lut": "/luts/",
        "text.lut": "/luts/ncsa_paledit/",
    }


def test_directory_overrides_builtin_of_same_name(tmp_path: Path) -> None:
    (tmp_path / "grays.lut").write_bytes(encode_lut(ramp_table()))
    luts = LutTable(tmp_path)
    grays = luts.get("grays.lut")
    assert grays is not None
    assert grays[10].tolist() == [10, 245, 5]
    assert "fire.lut" in luts  # other built-ins remain


def test_missing_directory_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LutTable(tmp_path / "absent")


@pytest.mark.parametrize(
    "name", ["../grays.lut", "luts/grays.lut", "..\\grays.lut", "..", ".", "", "grays.lut\x00"]
)
def test_unsafe_or_unknown_names_return_none(name: str) -> None:
    assert LutTable(None).get(name) is None


def test_lookup_is_case_sensitive_like_omero() -> None:
    assert LutTable(None).get("Fire.lut") is None


def test_luts_json_shape() -> None:
    body = luts_json(LutTable(None))
    json.dumps(body)  # serialisable
    assert set(body) == {"luts", "png_luts", "png_luts_new"}
    entries = body["luts"]
    assert isinstance(entries, list)
    by_name = {e["name"]: e for e in entries}
    fire = by_name["fire.lut"]
    assert set(fire) == {"id", "path", "name", "size", "png_index", "png_index_new"}
    assert fire["path"] == "/luts/"
    assert fire["size"] == 768
    assert body["png_luts"][fire["png_index"]] == "/luts/fire.lut"
    assert by_name["cool.lut"]["path"] == "/luts/ncsa_paledit/"
    assert by_name["red.lut"]["png_index"] == -1  # not in OMERO.web's sprite
    # listing order is case-insensitive by name, png_index_new counts it, ids are unique
    assert [e["png_index_new"] for e in entries] == list(range(len(entries)))
    assert [e["name"].lower() for e in entries] == sorted(e["name"].lower() for e in entries)
    assert len({e["id"] for e in entries}) == len(entries)
    assert body["png_luts_new"][-1] == "gradient.png"
    assert body["png_luts_new"][0] == entries[0]["path"] + entries[0]["name"]


def test_luts_json_with_rgb() -> None:
    body = luts_json(LutTable(None), include_rgb=True)
    grays = next(e for e in body["luts"] if e["name"] == "grays.lut")
    assert grays["rgb"][7] == [7, 7, 7]
    assert len(grays["rgb"]) == 256
