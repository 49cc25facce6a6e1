"""Parsed rendering outputs are kept by their parameters' texts (webgateway.output_from_query):
the key must hold every parameter the parse reads, and limits, so a kept output is always
the one a fresh parse would make."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from multidict import MultiDict

from idrserve.errors import BadRequest
from idrserve.http import webgateway
from idrserve.http.webgateway import OUTPUT_PARAMS, OUTPUTS_KEPT, output_from_query, parse_output
from idrserve.settings import LimitSettings

IVIEWER = (
    "c=1|100:3000$FF0000,2|200:4000$00FF00,-3|0:5000$0000FF&m=c"
    '&maps=[{"inverted":{"enabled":false}},{"inverted":{"enabled":true}},{}]'
    "&format=jpeg&q=0.9&flip=h"
)


def query(text: str) -> MultiDict[str]:
    pairs = (part.partition("=") for part in text.split("&") if part)
    return MultiDict((k, v) for k, _, v in pairs)


class Recording(Mapping[str, str]):
    """A query that notes every parameter read from it."""

    def __init__(self, inner: MultiDict[str]) -> None:
        self.inner = inner
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.inner[key]

    def __iter__(self) -> Iterator[str]:
        self.read.add("*")  # iterating reads every parameter: the key could not cover it
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.read.add(key)
        return self.inner.get(key, default)

    def getall(self, key: str, default: object = ()) -> object:
        self.read.add(key)
        return self.inner.getall(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return key in self.inner


@pytest.mark.parametrize("strict", [False, True])
def test_the_parse_reads_only_the_parameters_the_key_holds(strict: bool) -> None:
    recording = Recording(query(IVIEWER + "&tile=0,1,2,256,256&region=1,2,3,4&p=intmax"))
    parse_output(recording, LimitSettings(), strict)
    assert recording.read <= set(OUTPUT_PARAMS)
    assert {"c", "m", "maps"} <= recording.read


@pytest.mark.parametrize(
    "text",
    ["", "tile=0,0,0,256,256", IVIEWER, IVIEWER + "&c=2|0:10$FFFFFF", "q=0.5&format=png", "m=g"],
)
def test_a_kept_output_is_the_one_a_fresh_parse_makes(text: str) -> None:
    limits = LimitSettings()
    first = output_from_query(query(text), limits, False)
    # Another tile of the same view: the same object, equal to a fresh parse.
    again = output_from_query(query(text + "&tile=0,5,6,256,256"), limits, False)
    assert again is first
    assert again == parse_output(query(text), limits, False)


def test_the_limits_are_part_of_the_key() -> None:
    text = "c=1|0:10$FF0000,2|0:10$00FF00"
    assert output_from_query(query(text), LimitSettings(), False).overrides.channels
    with pytest.raises(BadRequest):
        output_from_query(query(text), LimitSettings(max_active_channels=1), False)
    low = output_from_query(query(""), LimitSettings(default_jpeg_quality=0.5), False)
    assert low.quality == 0.5
    assert output_from_query(query(""), LimitSettings(), False).quality != 0.5


def test_a_bad_query_is_refused_every_time_and_never_kept() -> None:
    bad = query("c=1|0:10$FF0000&m=x")
    for _ in range(2):
        with pytest.raises(BadRequest):
            output_from_query(bad, LimitSettings(), True)  # strict: m must be g or c


def test_kept_outputs_are_bounded() -> None:
    for n in range(OUTPUTS_KEPT + 10):
        output_from_query(query(f"c=1|0:{n + 1}$FF0000"), LimitSettings(), False)
    assert 0 < len(webgateway._OUTPUTS) <= OUTPUTS_KEPT
