"""Request overrides against saved settings (docs/webgateway.md#c-channels rules 1–6, `maps`)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from idrserve.model import (
    OVERRIDDEN_KEPT,
    ChannelMeta,
    ChannelOverride,
    ChannelRender,
    ColorModel,
    Family,
    ImageMeta,
    LevelMeta,
    MapOverride,
    RenderOverrides,
    RenderSettings,
)
from idrserve.render.settings import resolve_render, resolve_thumbnail

BLUE = (0, 0, 255, 255)
GREEN = (0, 255, 0, 255)
RED = (255, 0, 0, 255)
YELLOW = (255, 255, 0, 255)

# Saved: ch1 blue 110:1800 active (inverted), ch2 green 200:2500 active, ch3 red inactive
# (inverted, polynomial 2); ch3 keeps a LUT to check that colours clear it.
META = ImageMeta(
    image_id=1,
    name="P",
    dtype="uint16",
    size_x=10000,
    size_y=8000,
    size_z=1,
    size_c=3,
    size_t=1,
    levels=(LevelMeta(10000, 8000, 256, 256),),
    channels=(
        ChannelMeta("c1", BLUE, 0, 65535, 110.0, 1800.0, True, inverted=True),
        ChannelMeta("c2", GREEN, 0, 65535, 200.0, 2500.0, True),
        ChannelMeta(
            "c3",
            RED,
            0,
            65535,
            0.0,
            900.0,
            False,
            family=Family.POLYNOMIAL,
            coefficient=2.0,
            inverted=True,
            lut="fire.lut",
        ),
    ),
)
SAVED = META.default_render()


def ch(index: int, active: bool = True, **kwargs: object) -> ChannelOverride:
    return ChannelOverride(index, active, **kwargs)  # type: ignore[arg-type]


def resolve(
    channels: tuple[ChannelOverride, ...] | None,
    maps: tuple[MapOverride, ...] | None = None,
    model: ColorModel | None = None,
) -> RenderSettings:
    return resolve_render(META, RenderOverrides(channels, maps, model))


def saved(index: int, **changes: object) -> ChannelRender:
    return replace(SAVED.channels[index], **changes)  # type: ignore[arg-type]


# rule 1: start from the saved settings


def test_no_overrides_is_saved() -> None:
    assert resolve(None) == SAVED
    assert resolve_thumbnail(META) == SAVED


def test_model_override() -> None:
    assert resolve(None, model=ColorModel.GREYSCALE) == replace(SAVED, model=ColorModel.GREYSCALE)
    assert resolve((), model=ColorModel.COLOR).model is ColorModel.COLOR


# rule 2: with c, active iff listed as active


def test_empty_c_deactivates_everything_and_keeps_the_rest() -> None:
    got = resolve(())
    assert got.channels == tuple(replace(c, active=False) for c in SAVED.channels)
    assert got.active_indices() == ()


def test_listing_activates_an_inactive_channel_with_saved_settings() -> None:
    got = resolve((ch(2),))
    assert got.channels == (saved(0, active=False), saved(1, active=False), saved(2, active=True))


def test_inactive_entries_are_inactive_and_keep_saved_window_and_colour() -> None:
    got = resolve((ch(0, start=1.0, end=2.0, color=YELLOW), ch(1, False, start=5.0, end=6.0)))
    assert got.channels[0] == saved(0, start=1.0, end=2.0, color=YELLOW)
    assert got.channels[1] == saved(1, active=False)  # window on `-2` ignored


# rule 3: window, colour, LUT on active entries


def test_window_needs_both_ends() -> None:
    assert resolve((ch(0, start=5.0),)).channels[0] == saved(0)
    assert resolve((ch(0, start=5.0, end=7.0),)).channels[0] == saved(0, start=5.0, end=7.0)


def test_colour_clears_lut_and_lut_keeps_colour() -> None:
    assert resolve((ch(2, color=YELLOW),)).channels[2] == saved(
        2, active=True, color=YELLOW, lut=None
    )
    assert resolve((ch(0, lut="cool.lut"),)).channels[0] == saved(0, lut="cool.lut")


# rule 5: keyed by channel number; order of entries does not matter


def test_order_of_entries_does_not_matter() -> None:
    entries = (ch(0, start=1.0, end=2.0), ch(1, False), ch(2, color=YELLOW))
    maps = (MapOverride(inverted=False), MapOverride(), MapOverride(inverted=True))
    forward = resolve(entries, maps)
    backward = resolve(entries[::-1], maps[::-1])
    assert forward == backward
    assert forward.channels[2].inverted is True


def test_duplicate_channel_last_entry_wins() -> None:
    got = resolve((ch(0, start=1.0, end=2.0), ch(0, False)))
    assert got.channels[0] == saved(0, active=False)


def test_channels_beyond_size_c_are_ignored() -> None:
    got = resolve((ch(1), ch(3, color=YELLOW), ch(99), ch(-1)))
    assert got.active_indices() == (1,)
    assert len(got.channels) == 3


# maps: inversion


def test_empty_map_object_removes_saved_inversion_of_active_channel() -> None:
    got = resolve((ch(0), ch(1)), (MapOverride(inverted=False), MapOverride(inverted=False)))
    assert got.channels[0].inverted is False


def test_missing_map_entry_keeps_saved_inversion() -> None:
    got = resolve((ch(1), ch(0)), (MapOverride(inverted=True),))
    assert got.channels[1].inverted is True  # from the map
    assert got.channels[0].inverted is True  # beyond the list: saved
    got = resolve((ch(0),), (MapOverride(),))
    assert got.channels[0].inverted is True


def test_inversion_touches_only_active_entries() -> None:
    got = resolve((ch(0), ch(2, False)), (MapOverride(inverted=True), MapOverride(inverted=False)))
    assert got.channels[2].inverted is True  # saved, untouched through `-3` + `{}`
    got = resolve((ch(2),), (MapOverride(inverted=False),))
    assert got.channels[2].inverted is False


def test_maps_without_c_are_ignored() -> None:
    assert resolve(None, (MapOverride(inverted=False, family=Family.LINEAR),)) == SAVED


def test_iviewer_forms_resolve_equal() -> None:
    v016 = resolve(
        (
            ch(0, start=110.0, end=1800.0, color=BLUE),
            ch(1, start=200.0, end=2500.0, color=GREEN),
            ch(2, False, start=0.0, end=900.0, color=RED),
        ),
        (MapOverride(inverted=False), MapOverride(inverted=False), MapOverride(inverted=False)),
        ColorModel.COLOR,
    )
    v018 = resolve(
        (ch(0, start=110.0, end=1800.0, color=BLUE), ch(1, start=200.0, end=2500.0, color=GREEN)),
        (MapOverride(inverted=False), MapOverride(inverted=False)),
        ColorModel.COLOR,
    )
    assert v016 == v018
    assert v016.canonical() == v018.canonical()
    assert v016.channels[0].inverted is False  # saved inversion removed by enabled:false
    assert v016.channels[2] == saved(2)  # inactive ch3 keeps its saved inversion and LUT


# maps: quantization


def test_quantization_applies_to_listed_channels_active_or_not() -> None:
    got = resolve(
        (ch(0), ch(1, False)),
        (
            MapOverride(family=Family.LOGARITHMIC, coefficient=1.5),
            MapOverride(family=Family.EXPONENTIAL, coefficient=0.5),
        ),
    )
    assert (got.channels[0].family, got.channels[0].coefficient) == (Family.LOGARITHMIC, 1.5)
    assert (got.channels[1].family, got.channels[1].coefficient) == (Family.EXPONENTIAL, 0.5)
    assert got.channels[0].inverted is True  # no inverted key in a None-inverted map: saved


def test_linear_forces_coefficient_one_and_missing_family_keeps_saved() -> None:
    got = resolve(
        (ch(2), ch(0)),
        (MapOverride(family=Family.LINEAR, coefficient=3.0), MapOverride(coefficient=3.0)),
    )
    assert (got.channels[2].family, got.channels[2].coefficient) == (Family.LINEAR, 1.0)
    assert (got.channels[0].family, got.channels[0].coefficient) == (Family.LINEAR, 1.0)


@pytest.mark.parametrize("coefficient", [None, 0.0, -2.0, float("nan"), float("inf")])
def test_invalid_or_missing_coefficient_is_one(coefficient: float | None) -> None:
    got = resolve((ch(0),), (MapOverride(family=Family.POLYNOMIAL, coefficient=coefficient),))
    assert (got.channels[0].family, got.channels[0].coefficient) == (Family.POLYNOMIAL, 1.0)


# numbers are normalised so that canonical keys do not depend on int/float or -0.0


def test_integer_and_negative_zero_windows_normalise() -> None:
    meta = replace(
        META, channels=tuple(replace(c, start=int(c.start), end=int(c.end)) for c in META.channels)
    )
    assert resolve_render(meta, RenderOverrides()).canonical() == SAVED.canonical()
    a = resolve((ch(0, start=-0.0, end=5.0),)).canonical()
    b = resolve((ch(0, start=0.0, end=5.0),)).canonical()
    assert a == b
    assert all(type(c.start) is float for c in resolve_thumbnail(meta).channels)


def test_saved_settings_are_made_once_per_metadata_and_never_go_stale() -> None:
    """Requests without overrides share one settings object (and its canonical string); new
    metadata made with `replace` (settings saved again) never inherits them."""
    meta = replace(META)
    none = RenderOverrides()
    first = resolve_render(meta, none)
    assert resolve_render(meta, none) is first
    assert resolve_thumbnail(meta) is first
    assert first.canonical() is first.canonical()
    greyscale = resolve_render(meta, RenderOverrides(model=ColorModel.GREYSCALE))
    assert greyscale.model is ColorModel.GREYSCALE and greyscale.channels == first.channels
    # A cached canonical string is not part of equality or hashing.
    fresh = RenderSettings(first.channels, first.model)
    assert fresh == first and hash(fresh) == hash(first)
    assert fresh.canonical() == first.canonical()
    assert meta == META and hash(meta) == hash(META)

    resaved = replace(meta, channels=(meta.channels[1], meta.channels[0], meta.channels[2]))
    again = resolve_render(resaved, none)
    assert again is not first
    assert again.channels[0].color == GREEN and again.canonical() != first.canonical()
    assert resaved.default_render().channels[0].color == GREEN


def test_overridden_settings_are_kept_per_image_and_match_a_fresh_resolve() -> None:
    meta = replace(META)  # its own store of kept settings
    red = RenderOverrides(channels=(ChannelOverride(0, True, 10.0, 20.0, RED),))
    same = RenderOverrides(channels=(ChannelOverride(0, True, 10.0, 20.0, RED),))
    other = RenderOverrides(channels=(ChannelOverride(0, True, 10.0, 30.0, RED),))
    first = resolve_render(meta, red)
    assert resolve_render(meta, same) is first  # equal overrides: the kept object
    assert resolve_render(replace(META), same) == first  # and what a fresh image makes
    assert resolve_render(replace(META), same) is not first
    assert resolve_render(meta, other).channels[0].end == 30.0


def test_kept_overridden_settings_are_bounded() -> None:
    meta = replace(META)
    for end in range(OVERRIDDEN_KEPT + 5):
        ov = RenderOverrides(channels=(ChannelOverride(0, True, 0.0, float(end + 1)),))
        assert resolve_render(meta, ov).channels[0].end == end + 1
    kept = meta._overridden
    assert kept is not None and 0 < len(kept) <= OVERRIDDEN_KEPT
