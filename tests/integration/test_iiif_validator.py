"""The IIIF consortium's validator (`iiif-validator` from PyPI), level 2, for Image API 3.0 and
2.x, against a real `idrserve serve` process: zero failures.

The validator checks colours against its own 1000×1000 pattern of 100-pixel squares; the
pattern is written as an OME-Zarr image from the validator package's colour table
(tests/http/iiif_fixtures.py) and served like any other image, with its default rendering.
The validator is imported, not mocked: a missing package is an import error, not a skip.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator

import pytest
from iiif_validator import validator

from tests.http.iiif_fixtures import SQUARES, write_squares
from tests.integration.test_cli import free_port, wait_ready

# What the validator (1.0.5) lists at level ≤ 2: 33 tests for 3.0, 30 for 2.0. Checked so a
# validator that silently lists nothing cannot pass.
EXPECTED_COUNTS = {"3.0": 33, "2.0": 30}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("iiif_validator")
    write_squares(root)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "idrserve", "serve", "--zarr-root", str(root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def run_validator(
    server: str, version: str, level: int, only: set[str] | None = None
) -> tuple[list[str], list[str]]:
    """Run every validator test up to `level` (or just those named in `only`) as
    `iiif-validate.py` does; (passed, failures)."""
    prefix = f"iiif/{version[0]}"
    tests = validator.TestSuite(validator.ValidationInfo()).list_tests(version)
    passed, failures = [], []
    for name, meta in sorted(tests.items()):
        if (only is None and meta["level"] > level) or (only is not None and name not in only):
            continue
        result = validator.ImageAPI(str(SQUARES), server, prefix, "http", "", version, debug=False)
        try:
            validator.TestSuite(validator.ValidationInfo()).run_test(name, result)
        except Exception as exc:  # the validator's own crash on a bad response is a failure
            failures.append(f"{name}: {type(exc).__name__}: {exc} urls={result.urls}")
            continue
        if result.exception is not None:
            e = result.exception
            failures.append(
                f"{name}: {e.type} got={e.got!r} expected={e.expected!r} {e.message} "
                f"urls={result.urls}"
            )
        else:
            passed.append(name)
    return passed, failures


@pytest.mark.parametrize("version", ["3.0", "2.0"])
@pytest.mark.parametrize("seed", [1, 2])
def test_validator_level2(server: str, version: str, seed: int) -> None:
    random.seed(seed)  # the validator picks random squares and sizes; runs stay reproducible
    passed, failures = run_validator(server, version, level=2)
    assert not failures, "\n".join(failures)
    assert len(passed) == EXPECTED_COUNTS[version]
    for required in (
        "info_json",
        "id_squares",
        "region_percent",
        "size_bwh",
        "quality_bitonal",
        "rot_full_basic",
        "cors",
        "jsonld",
        "baseurl_redirect",
    ):
        assert required in passed
    if version == "3.0":
        assert {"region_square", "size_noup", "size_nofull"} <= set(passed)


LINK_TESTS = {"linkheader_canonical", "linkheader_profile"}


@pytest.mark.parametrize("version", ["3.0", "2.0"])
def test_validator_link_headers(server: str, version: str) -> None:
    """The validator's optional (level 3) Link header tests: the features info.json lists as
    canonicalLinkHeader and profileLinkHeader."""
    passed, failures = run_validator(server, version, level=3, only=LINK_TESTS)
    assert not failures, "\n".join(failures)
    assert set(passed) == LINK_TESTS
