"""The audit of error bodies (tests/conftest.py) catches every kind of leak it is meant to."""

from __future__ import annotations

from pathlib import Path

import pytest

from idrserve.http import middleware
from tests.leaks import LeakChecker, request_echo, server_paths


@pytest.fixture
def checker(tmp_path_factory: pytest.TempPathFactory) -> LeakChecker:
    return LeakChecker(server_paths(tmp_path_factory.getbasetemp()))


def body(detail: str) -> dict[str, object]:
    # Built by hand: a body from `middleware.error_body` would be audited, and these leak.
    return {"error": "source_error", "detail": detail, "request_id": "abc-1"}


def test_the_audit_sees_every_body_the_app_builds() -> None:
    """`middleware.error_body` is wrapped for the whole run, and a leak is recorded."""
    from tests.conftest import _AUDIT

    before, leaks = _AUDIT.bodies, len(_AUDIT.leaks)
    assert middleware.error_body("bad_request", "tile: expected level,col,row", "a-1") == {
        "error": "bad_request",
        "detail": "tile: expected level,col,row",
        "request_id": "a-1",
    }
    assert (_AUDIT.bodies, len(_AUDIT.leaks)) == (before + 1, leaks)
    middleware.error_body("source_error", "KeyError('shape')", "a-2")
    try:
        assert len(_AUDIT.leaks) == leaks + 1
        assert _AUDIT.leaks[-1][2] == ["exception class: 'KeyError'"]
    finally:
        del _AUDIT.leaks[leaks:]  # planted on purpose: not a failure of the run


@pytest.mark.parametrize(
    ("detail", "kind"),
    [
        ("FileNotFoundError: /srv/idr/1234567.zarr does not exist", "exception class"),
        ("reading metadata: KeyError('shape')", "exception class"),
        ("Traceback (most recent call last):", "traceback"),
        ("image 1: [Errno 13] Permission denied", "errno"),
        ("no store <zarr.storage.LocalStore object at 0x7f3a2c1d>", "object repr"),
        ("store https://idr:hunter2@s3.example.org/bucket unreachable", "URL with credentials"),
        ("reading s3://idr-bucket/zarr/1.zarr", "store URL"),
        ("reading file:///data/1.zarr/0", "store URL"),
        ("the assets are not installed in /tmp/build/vendor", "temporary directory"),
    ],
)
def test_each_kind_of_leak_is_found(checker: LeakChecker, detail: str, kind: str) -> None:
    found = checker.leaks(body(detail))
    assert any(f.startswith(kind) for f in found), found


def test_server_paths_are_found(checker: LeakChecker, tmp_path: Path) -> None:
    assert checker.leaks(body(f"cannot read {tmp_path}/0/.zarray"))
    assert checker.leaks(body(f"cache in {Path.home()}/.cache/idrserve"))
    assert checker.leaks(body(f"bad chunk under {Path.home()}"))
    checkout = Path(__file__).resolve().parents[2]
    assert checker.leaks(body(f"missing {checkout / 'idrserve' / 'static'}"))
    # the whole body is checked, not only `detail`
    assert checker.leaks({"error": "x", "detail": "fine", "param": "/tmp/x"})


@pytest.mark.parametrize(
    "detail",
    [
        "image 1234567 not found",
        "image 12: a stored chunk could not be decoded",
        "image 12: bad OME-NGFF metadata",
        "image 12: storage unreachable",
        "no such resource: /webgateway/render_image_region/1/0/0/",
        "tile: w and h must be > 0, tile=0,0,0,-1,-1",
        "redis://default:***@cache:6379/0 is redacted",
        "OMERO error: reading the image failed",  # lower-case "error" is prose
        "rootless /rooted paths that are not the home dir",
    ],
)
def test_public_details_pass(checker: LeakChecker, detail: str) -> None:
    assert checker.leaks(body(detail)) == []


def test_what_the_client_sent_is_no_leak(checker: LeakChecker) -> None:
    sent = "/viewer/static/..%2F..%2Ftmp%2Fsecret.txt"
    detail = "no such static file: ../../tmp/secret.txt"
    assert checker.leaks(body(detail))  # without the request, it would count
    assert checker.leaks(body(detail), request_echo(sent)) == []
    header = "bytes=ValueError: 5-"
    assert checker.leaks(body(f"Range {header!r} is bad"), request_echo("/zarr/", [header])) == []
