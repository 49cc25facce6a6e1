"""Resolve parsed request overrides against an image's saved rendering settings.

Rules: docs/webgateway.md#c-channels (rules 1–6) and
docs/webgateway.md#maps-inversion-and-quantization. Overrides are keyed by channel number, as
omero-ms-image-region does; for the ascending `c=` lists every client sends this equals OMERO.web,
which walks channels in index order instead (rule 5). Windows are passed through untouched: clamping
them to the pixel type (docs/rendering.md#windows) is the renderer's job.
"""

from __future__ import annotations

import math

from idrserve.model import (
    ChannelOverride,
    ChannelRender,
    Family,
    ImageMeta,
    MapOverride,
    RenderOverrides,
    RenderSettings,
)

_UNLISTED = ChannelOverride(index=-1, active=False)


def _resolve_channel(
    ch: ChannelRender, entry: ChannelOverride | None, mapping: MapOverride | None
) -> ChannelRender:
    """One channel: activation, then window/colour/LUT/inversion if active, then family.

    Numbers leave as floats without -0.0: `canonical()` uses repr, and sources may hand over
    JSON integers, so 110 and 110.0 would otherwise key equal pixels differently.
    """
    active, start, end, color, lut = ch.active, ch.start, ch.end, ch.color, ch.lut
    inverted, family, coefficient = ch.inverted, ch.family, ch.coefficient
    if entry is not None:
        active = entry.active
        if active:
            if entry.start is not None and entry.end is not None:
                start, end = entry.start, entry.end
            if entry.color is not None:
                color, lut = entry.color, None  # a hex colour clears the LUT (omero-py)
            if entry.lut is not None:
                lut = entry.lut  # unknown names fall back to the colour in the renderer
            if mapping is not None and mapping.inverted is not None:
                inverted = mapping.inverted
        if mapping is not None and mapping.family is not None:
            # Quantization follows abs(channel) on web: listed inactive channels get it too.
            family = mapping.family
            coefficient = 1.0 if mapping.coefficient is None else mapping.coefficient
            if family is Family.LINEAR or not (math.isfinite(coefficient) and coefficient > 0):
                coefficient = 1.0
    return ChannelRender(
        active=active,
        start=float(start) + 0.0,
        end=float(end) + 0.0,
        color=color,
        lut=lut,
        family=family,
        coefficient=float(coefficient) + 0.0,
        inverted=inverted,
    )


def resolve_render(meta: ImageMeta, ov: RenderOverrides) -> RenderSettings:
    """Saved settings of `meta` with the request's `c`/`maps`/`m` applied.

    With `c`: a channel is active iff it is listed as active; unlisted channels become
    inactive and keep everything else. Entries for channels ≥ sizeC are ignored. `maps`
    element i goes with `c` entry i; an element beyond the list keeps the saved inversion,
    an element without `inverted` (``{}``) removes it. `maps` without `c` is ignored.
    A channel listed twice: the last entry wins.
    """
    if ov.channels is None:
        saved = meta.saved_render(_resolve_saved)  # one object for every such request
        if ov.model is None or ov.model is saved.model:
            return saved
        return RenderSettings(saved.channels, ov.model)
    return meta.overridden_render(ov, _resolve_overrides)


def _resolve_overrides(meta: ImageMeta, ov: RenderOverrides) -> RenderSettings:
    assert ov.channels is not None
    base = meta.default_render()
    model = ov.model if ov.model is not None else base.model
    count = len(base.channels)
    listed: dict[int, tuple[ChannelOverride, MapOverride | None]] = {}
    for pos, entry in enumerate(ov.channels):
        if 0 <= entry.index < count:
            mapping = ov.maps[pos] if ov.maps is not None and pos < len(ov.maps) else None
            listed[entry.index] = (entry, mapping)
    channels: list[ChannelRender] = []
    for index, ch in enumerate(base.channels):
        hit = listed.get(index)
        if hit is None:  # not listed: inactive, everything else as saved
            channels.append(_resolve_channel(ch, _UNLISTED, None))
        else:
            channels.append(_resolve_channel(ch, *hit))
    return RenderSettings(tuple(channels), model)


def resolve_thumbnail(meta: ImageMeta) -> RenderSettings:
    """Thumbnails use the saved settings; `c`, `m` and `p` are not honoured.

    As on OMERO.web: docs/webgateway.md#thumbnails.
    """
    return meta.saved_render(_resolve_saved)


def _resolve_saved(meta: ImageMeta) -> RenderSettings:
    base = meta.default_render()
    channels = tuple(_resolve_channel(ch, None, None) for ch in base.channels)
    return RenderSettings(channels, base.model)
