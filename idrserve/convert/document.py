"""The image group's NGFF attributes: `multiscales` with units and scales, and `omero`.

Pure functions. Scales are the physical pixel size (1 when unknown) times 2^level on y and
x, as bioformats2raw writes them; an axis gets a `unit` only when the input named one.
Windows come from `run.py` (0.1/99.9 percentiles of the coarsest level, `compute_window`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from idrserve.convert.metadata import ImageInfo
from idrserve.convert.plan import Layout
from idrserve.sources import ngff

AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
METHOD = (
    "2x2 area mean of the level above (integers rounded half up), or the input's own"
    " level of that size"
)


def multiscales(layout: Layout, info: ImageInfo, version: str) -> dict[str, Any]:
    axes = []
    for a in layout.axes:
        axis: dict[str, Any] = {"name": a, "type": AXIS_TYPES[a]}
        size = info.sizes.get(a)
        if size is not None and size.unit is not None:
            axis["unit"] = size.unit
        axes.append(axis)
    datasets = []
    for k in range(len(layout.levels)):
        scale = []
        for a in layout.axes:
            size = info.sizes.get(a)
            base = size.value if size is not None else 1.0
            scale.append(float(base * 2**k) if a in "yx" else float(base))
        datasets.append(
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    doc: dict[str, Any] = {
        "axes": axes,
        "datasets": datasets,
        "name": info.name,
        "type": "mean",
        "metadata": {"method": METHOD},
    }
    if version == "0.4":
        doc["version"] = "0.4"
    return doc


def omero(
    layout: Layout, info: ImageInfo, windows: Sequence[ngff.ChannelStats], version: str
) -> dict[str, Any]:
    """The rendering defaults; fields of an input `omero` block (OME-Zarr input) win."""
    span = ngff.dtype_range(layout.dtype)
    palette = ngff.palette(layout.size_c)
    channels = []
    for c, stats in enumerate(windows):
        name = info.channel_names[c] if c < len(info.channel_names) else None
        colour = info.channel_colours[c] if c < len(info.channel_colours) else None
        if colour is None:
            r, g, b, _ = palette[c]
            colour = f"{r:02X}{g:02X}{b:02X}"
        if info.rgb and span is not None:
            start, end = span  # display-ready samples: the full range
        else:
            start, end = stats.start, stats.end
        low, high = span if span is not None else (stats.lo, stats.hi)
        alpha = info.rgb and c % layout.samples == 3
        channels.append(
            {
                "label": name or str(c),
                "color": colour,
                "active": c < 3 and not alpha,
                "inverted": False,
                "family": "linear",
                "coefficient": 1.0,
                "window": {
                    "min": min(low, start),
                    "max": max(high, end),
                    "start": start,
                    "end": end,
                },
            }
        )
    model = "color" if info.rgb or 1 < layout.size_c < 8 else "greyscale"
    rdefs = {"defaultZ": layout.size_z // 2, "defaultT": 0, "model": model}
    block: dict[str, Any] = {"name": info.name, "channels": channels, "rdefs": rdefs}
    if version == "0.4":
        block["version"] = "0.4"
    if info.omero is not None:
        _overlay(block, info.omero, layout)
    return block


def _overlay(block: dict[str, Any], given: Mapping[str, Any], layout: Layout) -> None:
    """Keep what an input `omero` block says, where it says it with the right types."""
    if isinstance(given.get("name"), str):
        block["name"] = given["name"]
    raw = given.get("channels")
    if isinstance(raw, list) and len(raw) == layout.size_c:
        for ours, theirs in zip(block["channels"], raw, strict=True):
            if not isinstance(theirs, Mapping):
                continue
            for key in ("label", "color", "family"):
                if isinstance(theirs.get(key), str):
                    ours[key] = theirs[key]
            for key in ("active", "inverted"):
                if isinstance(theirs.get(key), bool):
                    ours[key] = theirs[key]
            if _number(theirs.get("coefficient")):
                ours["coefficient"] = float(theirs["coefficient"])
            window = theirs.get("window")
            if isinstance(window, Mapping):
                for key in ("min", "max", "start", "end"):
                    if _number(window.get(key)):
                        ours["window"][key] = window[key]
    rdefs = given.get("rdefs")
    if isinstance(rdefs, Mapping):
        for key in ("defaultZ", "defaultT"):
            value = rdefs.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                block["rdefs"][key] = value
        if rdefs.get("model") in ("color", "greyscale"):
            block["rdefs"]["model"] = rdefs["model"]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def attributes(
    layout: Layout, info: ImageInfo, windows: Sequence[ngff.ChannelStats], version: str
) -> dict[str, Any]:
    """The group's NGFF keys (`.zattrs` for 0.4; `attributes.ome` for 0.5, with `version`)."""
    doc: dict[str, Any] = {
        "multiscales": [multiscales(layout, info, version)],
        "omero": omero(layout, info, windows, version),
    }
    if version == "0.5":
        doc = {"version": "0.5", **doc}
    return doc
