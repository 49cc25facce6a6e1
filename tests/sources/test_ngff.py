"""Pure NGFF parsing: axes, versions, array documents, lenient `omero` blocks and defaults."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idrserve.model import ColorModel, Family
from idrserve.sources import ngff


def v2_array(shape: list[int], chunks: list[int], dtype: str = "<u2") -> dict[str, Any]:
    return {"zarr_format": 2, "shape": shape, "chunks": chunks, "dtype": dtype}


def image(attrs: dict[str, Any], shapes: list[list[int]], dtype: str = "<u2") -> ngff.NgffImage:
    ms = ngff.parse_multiscale(attrs)
    arrays = [ngff.parse_array(v2_array(s, [1] * (len(s) - 2) + [64, 64], dtype)) for s in shapes]
    return ngff.build_image(ms, arrays)


def attrs_with(axes: Any = None, omero: Any = None, **ms_extra: Any) -> dict[str, Any]:
    ms: dict[str, Any] = {"version": "0.4", "datasets": [{"path": "0"}], **ms_extra}
    if axes is not None:
        ms["axes"] = axes
    out: dict[str, Any] = {"multiscales": [ms]}
    if omero is not None:
        out["omero"] = omero
    return out


def meta_of(img: ngff.NgffImage, stats: dict[int, ngff.ChannelStats] | None = None) -> Any:
    return ngff.to_image_meta(img, 1, stats=stats or {}, data_version="v")


# ---- colours ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rgba"),
    [
        ("FF0000", (255, 0, 0, 255)),
        ("#ff8000", (255, 128, 0, 255)),
        ("00ff00ff", (0, 255, 0, 255)),
        ("#0000FF80", (0, 0, 255, 255)),  # alpha ignored: colours are opaque
        (" 123456 ", (0x12, 0x34, 0x56, 255)),
        ("red", None),
        ("FFF", None),
        ("GG0000", None),
        ("FF0000GG", None),
        (16711680, None),
        (None, None),
    ],
)
def test_parse_color(text: Any, rgba: Any) -> None:
    assert ngff.parse_color(text) == rgba


# ---- axes and versions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("axes", "shape", "roles"),
    [
        (None, [1, 2, 3, 40, 50], ("t", "c", "z", "y", "x")),  # 0.1/0.2
        (None, [3, 40, 50], ("z", "y", "x")),  # tolerated: trailing roles
        (["c", "y", "x"], [2, 40, 50], ("c", "y", "x")),  # 0.3 strings
        (
            [{"name": "t", "type": "time"}, {"name": "y"}, {"name": "x"}],
            [4, 40, 50],
            ("t", "y", "x"),
        ),
        (
            [
                {"name": "ch", "type": "channel"},
                {"name": "depth", "type": "space"},
                {"name": "row", "type": "space"},
                {"name": "col", "type": "space"},
            ],
            [2, 3, 40, 50],
            ("c", "z", "y", "x"),
        ),  # custom names: roles from types
        ([{"name": "Y"}, {"name": "X"}], [40, 50], ("y", "x")),
    ],
)
def test_axes_roles(axes: Any, shape: list[int], roles: tuple[str, ...]) -> None:
    img = image(attrs_with(axes), [shape])
    assert img.axes == roles
    assert img.size("y") == 40
    assert img.size("x") == 50


def test_v3_group_attrs_and_version_suffix() -> None:
    doc = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {
            "ome": {"version": "0.5-dev", "multiscales": [{"datasets": [{"path": "0"}]}]}
        },
    }
    ms = ngff.parse_multiscale(ngff.ngff_attrs(doc, 3))
    assert ms.version == "0.5"


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"multiscales": []},
        {"multiscales": [{"datasets": []}]},
        {"multiscales": [{"datasets": [{"path": "../etc"}]}]},
        {"multiscales": [{"datasets": [{"path": "/abs"}]}]},
        {"multiscales": ["nope"]},
    ],
)
def test_unusable_multiscales_raise_ngff_error(attrs: dict[str, Any]) -> None:
    with pytest.raises(ngff.NgffError):
        ngff.parse_multiscale(attrs)


# ---- array documents -------------------------------------------------------------------------


def test_v3_sharded_array_uses_inner_chunks_and_endian() -> None:
    doc = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [1, 2, 2160, 2560],
        "data_type": "uint16",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 1, 2160, 2560]}},
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": [1, 1, 540, 640],
                    "codecs": [{"name": "bytes", "configuration": {"endian": "big"}}],
                },
            }
        ],
    }
    info = ngff.parse_array(doc)
    assert info.chunks == (1, 1, 540, 640)
    assert info.shards == (1, 1, 2160, 2560)
    assert info.dtype == np.dtype(">u2")


@pytest.mark.parametrize(
    "doc",
    [
        {"zarr_format": 2, "shape": [10], "chunks": [10, 10], "dtype": "<u2"},
        {"zarr_format": 2, "shape": [10, 10], "chunks": [5, 5], "dtype": "|O"},
        {"zarr_format": 2, "shape": [10, 10], "chunks": [5, 5], "dtype": "nonsense"},
        {"zarr_format": 3, "shape": [10, 10], "data_type": "complex64"},
        {"zarr_format": 4},
        {"zarr_format": 2},
    ],
)
def test_bad_array_documents_raise_ngff_error(doc: dict[str, Any]) -> None:
    with pytest.raises(ngff.NgffError):
        ngff.parse_array(doc)


def test_levels_of_different_rank_are_rejected() -> None:
    attrs = attrs_with()
    attrs["multiscales"][0]["datasets"] = [{"path": "0"}, {"path": "1"}]
    ms = ngff.parse_multiscale(attrs)
    arrays = [
        ngff.parse_array(v2_array([4, 64, 64], [1, 64, 64])),
        ngff.parse_array(v2_array([32, 32], [32, 32])),
    ]
    with pytest.raises(ngff.NgffError):
        ngff.build_image(ms, arrays)


# ---- physical sizes --------------------------------------------------------------------------


def test_pixel_size_in_micrometres_with_global_scale() -> None:
    axes = [
        {"name": "z", "type": "space", "unit": "nanometer"},
        {"name": "y", "type": "space", "unit": "millimeter"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    transforms = [{"type": "scale", "scale": [500.0, 0.001, 0.25]}]
    attrs = attrs_with(axes)
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"] = transforms
    attrs["multiscales"][0]["coordinateTransformations"] = [{"type": "scale", "scale": [2, 1, 1]}]
    img = image(attrs, [[3, 40, 50]])
    assert img.pixel_size == pytest.approx((0.25, 1.0, 1.0))
    # iviewer shows each size in its stored unit, under OME's unit name.
    assert img.stored_pixel_size == (
        (0.25, "MICROMETER"),
        (0.001, "MILLIMETER"),
        (1000.0, "NANOMETER"),
    )


def test_pixel_size_not_finite_is_unknown() -> None:
    """JSON parsing gives Infinity, and two huge scales multiply to it; neither is a size."""
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    attrs = attrs_with(axes)
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [2.0, float("inf"), 1e300]}
    ]
    attrs["multiscales"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [1.0, 1.0, 1e300]}
    ]
    img = image(attrs, [[3, 40, 50]])
    assert img.pixel_size == (None, None, 2.0)
    assert img.stored_pixel_size == (None, None, (2.0, "MICROMETER"))


def test_every_known_length_unit_has_an_ome_name() -> None:
    assert set(ngff._OME_LENGTH_UNITS) == set(ngff._MICROMETRES)


def test_pixel_size_unknown_without_units() -> None:
    attrs = attrs_with([{"name": "y"}, {"name": "x"}])
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [1.0, 1.0]}
    ]
    assert image(attrs, [[40, 50]]).pixel_size == (None, None, None)
    assert image(attrs, [[40, 50]]).stored_pixel_size == (None, None, None)


# ---- omero block: lenient parsing and defaults -----------------------------------------------


def test_defaults_without_omero_block() -> None:
    img = image(attrs_with(), [[1, 4, 9, 40, 50]])
    meta = meta_of(img, {c: ngff.ChannelStats(5.0 + c, 500.0, 0.0, 900.0) for c in range(4)})
    assert [ch.label for ch in meta.channels] == ["0", "1", "2", "3"]
    assert [ch.color[:3] for ch in meta.channels] == [
        (0, 255, 255), (255, 255, 0), (255, 0, 255), (255, 0, 0),
    ]  # fmt: skip
    assert [ch.active for ch in meta.channels] == [True, True, True, False]
    assert [(ch.start, ch.end) for ch in meta.channels][1] == (6.0, 500.0)
    assert all((ch.window_min, ch.window_max) == (0, 65535) for ch in meta.channels)
    assert all(ch.family is Family.LINEAR and ch.coefficient == 1.0 for ch in meta.channels)
    assert meta.default_z == 4
    assert meta.default_t == 0
    assert meta.default_model is ColorModel.COLOR


@pytest.mark.parametrize(
    ("size_c", "model"), [(1, "greyscale"), (2, "color"), (7, "color"), (8, "greyscale")]
)
def test_default_model_follows_omero_rule(size_c: int, model: str) -> None:
    img = image(attrs_with(["c", "y", "x"]), [[size_c, 40, 50]], dtype="|u1")
    assert meta_of(img).default_model.value == model


@pytest.mark.parametrize(("size_c", "colours"), [
    (1, [(255, 255, 255)]),
    (2, [(255, 0, 255), (0, 255, 0)]),
    (7, [(0, 255, 255), (255, 255, 0), (255, 0, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255),
         (255, 255, 255)]),
])  # fmt: skip
def test_vizarr_palette(size_c: int, colours: list[tuple[int, int, int]]) -> None:
    img = image(attrs_with(["c", "y", "x"]), [[size_c, 40, 50]], dtype="|u1")
    assert [ch.color[:3] for ch in meta_of(img).channels] == colours


def test_uint8_without_window_is_full_range() -> None:
    img = image(attrs_with(), [[40, 50]], dtype="|u1")
    assert ngff.channels_needing_stats(img) == ()
    ch = meta_of(img).channels[0]
    assert (ch.start, ch.end, ch.window_min, ch.window_max) == (0, 255, 0, 255)


MALFORMED_OMERO: list[Any] = [
    "not an object",
    {"channels": "nope"},
    {"channels": [None, 3, "x"]},
    {"channels": [{"color": 12, "window": "w", "active": "yes", "label": 5}]},
    {"channels": [{"window": {"start": "0", "end": None, "min": [], "max": {}}}]},
    {"channels": [{"window": {"start": 100, "end": 10}}]},  # start > end: computed instead
    {"channels": [{"family": "cubic", "coefficient": "2", "inverted": "no"}]},
    {"channels": [{}], "rdefs": {"defaultZ": 99, "defaultT": -1, "model": "sepia"}},
    {"channels": [{}], "rdefs": "nope"},
    {"rdefs": {"defaultZ": 1.5}},
]


@pytest.mark.parametrize("omero", MALFORMED_OMERO)
def test_malformed_omero_gives_defaults(omero: Any) -> None:
    img = image(attrs_with(omero=omero), [[1, 3, 40, 50]])
    assert ngff.channels_needing_stats(img) == (0,)
    meta = meta_of(img, {0: ngff.ChannelStats(7.0, 70.0, 1.0, 99.0)})
    ch = meta.channels[0]
    assert ch.label == "0"
    assert ch.color == (255, 255, 255, 255)
    assert (ch.start, ch.end) == (7.0, 70.0)
    assert (ch.window_min, ch.window_max) == (0.0, 65535.0)
    assert ch.active is True
    assert ch.family is Family.LINEAR
    assert ch.coefficient == 1.0
    assert ch.inverted is False
    assert meta.default_z == 1
    assert meta.default_t == 0


def test_partial_omero_fills_only_what_is_missing() -> None:
    omero = {
        "name": "from-omero",
        "channels": [
            {"label": "DAPI", "color": "#0000ff", "window": {"start": 1.5, "end": 900}},
            {"color": "00FF0080", "active": False, "family": "logarithmic", "inverted": True},
        ],
        "rdefs": {"defaultZ": 2, "model": "greyscale"},
    }
    img = image(attrs_with(omero=omero), [[2, 5, 40, 50]], dtype="<f4")
    assert ngff.channels_needing_stats(img) == (0, 1)  # floats: slider range from data
    meta = meta_of(img, {c: ngff.ChannelStats(-1.0, 2.0, -3.0, 3.0) for c in (0, 1)})
    a, b = meta.channels
    assert (a.label, a.color, a.start, a.end) == ("DAPI", (0, 0, 255, 255), 1.5, 900.0)
    assert (a.window_min, a.window_max) == (-3.0, 900.0)  # widened to contain the window
    assert (b.label, b.color, b.active, b.inverted) == ("1", (0, 255, 0, 255), False, True)
    assert b.family is Family.LOGARITHMIC
    assert (b.start, b.end) == (-1.0, 2.0)
    assert meta.name == "from-omero"
    assert meta.default_z == 2
    assert meta.default_model is ColorModel.GREYSCALE
    assert meta.dtype == "float32"


def test_omero_block_without_model_is_color() -> None:
    img = image(attrs_with(omero={"channels": [{"color": "00FF00"}]}), [[40, 50]], dtype="|u1")
    assert meta_of(img).default_model is ColorModel.COLOR


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
channel_like = st.dictionaries(
    st.sampled_from(["label", "color", "active", "window", "family", "coefficient", "inverted"]),
    json_values | st.dictionaries(st.sampled_from(["min", "max", "start", "end"]), json_values),
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"channels": st.lists(channel_like, max_size=4)},
            optional={
                "rdefs": st.dictionaries(
                    st.sampled_from(["defaultZ", "defaultT", "model"]), json_values
                ),
                "name": json_values,
            },
        ),
    )
)
def test_any_omero_json_never_raises(omero: Any) -> None:
    img = image(attrs_with(omero=omero), [[3, 2, 40, 50]])
    stats = {c: ngff.ChannelStats(0.0, 1.0, 0.0, 1.0) for c in ngff.channels_needing_stats(img)}
    meta = meta_of(img, stats)
    assert len(meta.channels) == 3
    for ch in meta.channels:
        assert ch.start < ch.end
        assert ch.window_min <= ch.start
        assert ch.end <= ch.window_max
        assert len(ch.color) == 4
        assert ch.color[3] == 255


# ---- auto windows ----------------------------------------------------------------------------


def test_compute_window_percentiles_of_nonzero_finite_values() -> None:
    plane = np.zeros((100, 100), np.float32)
    plane[:50] = np.arange(5000, dtype=np.float32).reshape(50, 100) + 1
    plane[0, 0] = np.nan
    plane[0, 1] = np.inf
    st_ = ngff.compute_window(plane)
    finite = plane[np.isfinite(plane) & (plane != 0)]
    lo, hi = np.percentile(finite, [0.1, 99.9])
    assert (st_.start, st_.end) == pytest.approx((lo, hi))
    assert (st_.lo, st_.hi) == (0.0, 5000.0)


@pytest.mark.parametrize(
    ("plane", "window"),
    [
        (np.full((4, 4), 7, np.uint16), (7.0, 8.0)),  # constant: [v, v+1]
        (np.zeros((4, 4), np.uint16), (0.0, 1.0)),
        (np.full((4, 4), np.nan, np.float32), (0.0, 1.0)),
        # (non-zero values constant: fall back to min/max of all finite values)
        (np.array([[0, 5], [5, 5]], np.uint16), (0.0, 5.0)),
    ],
)
def test_compute_window_degenerate(plane: np.ndarray, window: tuple[float, float]) -> None:
    got = ngff.compute_window(plane)
    assert (got.start, got.end) == window
