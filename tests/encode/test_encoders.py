"""Encoders round-trip through Pillow: PNG/TIFF exactly, JPEG within a tolerance."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from idrserve.encode import (
    ENCODERS,
    encode,
    encode_jpeg,
    encode_png,
    encode_png_rgba,
    encode_tiff,
    jpeg_quality,
)
from idrserve.model import LOSSY_FORMATS, MEDIA_TYPES, Format


def smooth(height: int, width: int) -> np.ndarray:
    """Gentle gradients plus a soft blob: JPEG-friendly content at any size."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    spread = 0.1 * max(width, height) ** 2 + 400  # wide enough to stay smooth on tiny images
    blob = 120 * np.exp(-((x - width / 2) ** 2 + (y - height / 2) ** 2) / spread)
    return np.stack([64 + 0.5 * x, 64 + 0.5 * y, 40 + blob], axis=-1).clip(0, 255).astype(np.uint8)


def noisy(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def decode(data: bytes) -> tuple[np.ndarray, str, str | None]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im.convert("RGB")), im.mode, im.format


@pytest.mark.parametrize(("fmt", "name"), [(Format.PNG, "PNG"), (Format.TIFF, "TIFF")])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (37, 53), (256, 256)])
def test_lossless_round_trip(fmt: Format, name: str, shape: tuple[int, int]) -> None:
    rgb = noisy(*shape)
    pixels, mode, found = decode(encode(rgb, fmt, 0.9))
    assert found == name
    assert mode == "RGB"
    assert (pixels == rgb).all()


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (256, 256), (300, 517)])
def test_jpeg_round_trip_within_tolerance(shape: tuple[int, int]) -> None:
    rgb = smooth(*shape)
    pixels, _, found = decode(encode(rgb, Format.JPEG, 0.95))
    assert found == "JPEG"
    assert pixels.shape == rgb.shape
    diff = np.abs(pixels.astype(int) - rgb.astype(int))
    assert diff.mean() < 2.0
    assert diff.max() <= 12
    # and no worse than Pillow's libjpeg at the same settings
    ref = io.BytesIO()
    Image.fromarray(rgb).save(ref, "JPEG", quality=95, subsampling=2)
    ref_diff = np.abs(decode(ref.getvalue())[0].astype(int) - rgb.astype(int))
    assert diff.mean() <= ref_diff.mean() + 0.5


def test_jpeg_is_420_subsampled() -> None:
    data = encode_jpeg(smooth(64, 64), 0.9)
    with Image.open(io.BytesIO(data)) as im:
        # Pillow reports (h, v) sampling factors per component; 4:2:0 → luma 2×2, chroma 1×1
        layers = im.layer  # type: ignore[attr-defined]
    assert [tuple(layer[1:3]) for layer in layers] == [(2, 2), (1, 1), (1, 1)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.9, 90), (0.85, 85), (0.005, 1), (0.0, 1), (1.0, 100), (2.0, 100), (0.555, 56), (0.125, 13)],
)
def test_quality_mapping(q: float, expected: int) -> None:
    assert jpeg_quality(q) == expected


def test_quality_changes_size_and_quantisation() -> None:
    rgb = noisy(128, 128)
    low, high = encode_jpeg(rgb, 0.3), encode_jpeg(rgb, 0.95)
    assert len(low) < len(high)
    with Image.open(io.BytesIO(low)) as a, Image.open(io.BytesIO(high)) as b:
        qa, qb = a.quantization, b.quantization  # type: ignore[attr-defined]
    assert qa[0][0] > qb[0][0]  # coarser DC step at lower quality


def test_quality_matches_libjpeg_tables() -> None:
    """Same quantisation tables as Pillow/libjpeg at quality round(q·100)."""
    rgb = smooth(32, 32)
    ours = encode_jpeg(rgb, 0.85)
    ref = io.BytesIO()
    Image.fromarray(rgb).save(ref, "JPEG", quality=85, subsampling=2)
    with Image.open(io.BytesIO(ours)) as a, Image.open(io.BytesIO(ref.getvalue())) as b:
        assert a.quantization == b.quantization  # type: ignore[attr-defined]


@pytest.mark.parametrize("quality", [float("nan"), float("inf")])
def test_jpeg_rejects_non_finite_quality(quality: float) -> None:
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(smooth(4, 4), quality)


@pytest.mark.parametrize("fmt", list(Format))
def test_non_contiguous_input(fmt: Format) -> None:
    base = noisy(40, 60, seed=3)
    view = base[::2, ::-3]
    assert not view.flags.c_contiguous
    pixels, _, _ = decode(encode(view, fmt, 1.0))
    assert pixels.shape == view.shape
    if fmt not in LOSSY_FORMATS:
        assert (pixels == view).all()


@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 4, 3), np.uint16),
        np.zeros((0, 4, 3), np.uint8),
    ],
)
def test_rejects_bad_input(fmt: Format, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="expected"):
        encode(bad, fmt, 0.9)


def test_dispatch_table_covers_every_format() -> None:
    assert set(ENCODERS) == set(Format) == set(MEDIA_TYPES)
    assert ENCODERS[Format.JPEG] is encode_jpeg
    assert ENCODERS[Format.PNG] is encode_png
    assert ENCODERS[Format.TIFF] is encode_tiff


def test_magic_bytes() -> None:
    rgb = smooth(8, 8)
    assert encode(rgb, Format.JPEG, 0.9)[:3] == b"\xff\xd8\xff"
    assert encode(rgb, Format.PNG, 0.9)[:8] == b"\x89PNG\r\n\x1a\n"
    assert encode(rgb, Format.TIFF, 0.9)[:4] in (b"II*\x00", b"MM\x00*")
    webp = encode(rgb, Format.WEBP, 0.9)
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (256, 256), (300, 517)])
def test_webp_round_trip_within_tolerance(shape: tuple[int, int]) -> None:
    rgb = smooth(*shape)
    pixels, _, found = decode(encode(rgb, Format.WEBP, 0.95))
    assert found == "WEBP" and pixels.shape == rgb.shape
    assert np.abs(pixels.astype(int) - rgb.astype(int)).mean() < 3
    small = len(encode(rgb, Format.WEBP, 0.3))
    assert small <= len(encode(rgb, Format.WEBP, 0.95))


def test_png_rgba_round_trip() -> None:
    rgba = np.random.default_rng(3).integers(0, 256, size=(20, 256, 4), dtype=np.uint8)
    image = Image.open(io.BytesIO(encode_png_rgba(rgba[:, ::-1])))
    assert image.mode == "RGBA"
    assert (np.asarray(image) == rgba[:, ::-1]).all()
    with pytest.raises(ValueError, match="4"):
        encode_png_rgba(rgba[:, :, :3])
