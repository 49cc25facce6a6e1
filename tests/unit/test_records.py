"""`model.record`: per-request values built by plain slot stores, compared, hashed and
replaced as the frozen dataclasses they replaced."""

from __future__ import annotations

import dataclasses

import pytest

from idrserve.http.coldpath import ColdAnswer
from idrserve.http.iiif_params import RegionSpec
from idrserve.http.plan import IiifAsk, RegionAsk
from idrserve.model import Box, RegionRequest, RenderSettings, Selection, record
from idrserve.pyramid import Plan

RECORDS = [Box, Selection, RegionRequest, Plan, RegionSpec, RegionAsk, IiifAsk, ColdAnswer]


@record
class Point:
    x: int
    y: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenPoint:
    x: int
    y: int = 0


def test_a_record_compares_hashes_and_replaces_as_a_frozen_dataclass() -> None:
    a, b = Point(1, 2), Point(1, 2)
    assert a == b and hash(a) == hash(b) and a is not b
    assert a != Point(1, 3)
    assert hash(a) == hash(FrozenPoint(1, 2))  # the fields' tuple, as frozen ones hash
    assert {a: "kept"}[b] == "kept"
    assert dataclasses.replace(a, y=5) == Point(1, 5)
    assert repr(a) == "Point(x=1, y=2)"
    assert dataclasses.is_dataclass(a) and not hasattr(a, "__dict__")
    with pytest.raises(AttributeError):
        a.z = 1  # type: ignore[attr-defined]  # slots: no other attribute either


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_the_per_request_values_are_records(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    assert cls.__hash__ is not None and cls.__hash__ is not object.__hash__
    assert "__slots__" in vars(cls)


def test_equal_requests_share_a_key_and_a_hash() -> None:
    render = RenderSettings(channels=())
    one = RegionRequest(1, 0, 0, 0, Box(0, 0, 256, 256), render, data_version="v")
    two = RegionRequest(1, 0, 0, 0, Box(0, 0, 256, 256), render, data_version="v")
    assert one == two and hash(one) == hash(two) and one.key() == two.key()
    assert dataclasses.replace(one, z=1).key() != one.key()
