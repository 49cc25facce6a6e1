"""The compiled render loops (render/kernels.py) against their numpy definitions."""

from __future__ import annotations

import numpy as np
import pytest

from idrserve.render import kernels


def test_compiled_loops_are_in_use() -> None:
    # numba is a dependency: a silent fall-back to numpy would cost a third of the render.
    assert kernels.COMPILED
    assert kernels.lut_into is not kernels.lut_into_numpy


def _cases(dtype: type[np.unsignedinteger], contiguous: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    size = 256 if dtype is np.uint8 else 65536
    table = rng.integers(0, 256, size=size, dtype=np.uint8)
    table.setflags(write=False)
    index = rng.integers(0, size, size=(37, 90), dtype=dtype)
    if not contiguous:
        index = index[::-1, ::2]
    return table, index


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("component", [0, 1, 2])
def test_lut_into_equals_numpy(
    dtype: type[np.unsignedinteger], contiguous: bool, component: int
) -> None:
    table, index = _cases(dtype, contiguous)
    base = np.random.default_rng(1).integers(0, 256, size=(*index.shape, 3), dtype=np.uint8)
    got, want = base.copy(), base.copy()
    kernels.lut_into(got, component, table, index)
    kernels.lut_into_numpy(want, component, table, index)
    np.testing.assert_array_equal(got, want)
    # Only the named component changed.
    others = [c for c in range(3) if c != component]
    np.testing.assert_array_equal(got[..., others], base[..., others])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("contiguous", [True, False])
def test_lut_add_into_saturates_like_numpy(
    dtype: type[np.unsignedinteger], contiguous: bool
) -> None:
    table, index = _cases(dtype, contiguous)
    # Start values across the whole byte range, so both sums under and over 255 occur.
    base = np.random.default_rng(2).integers(0, 256, size=(*index.shape, 3), dtype=np.uint8)
    got, want = base.copy(), base.copy()
    kernels.lut_add_into(got, 1, table, index)
    kernels.lut_add_into_numpy(want, 1, table, index)
    np.testing.assert_array_equal(got, want)
    exact = np.minimum(base[..., 1].astype(int) + table[index].astype(int), 255)
    np.testing.assert_array_equal(got[..., 1], exact)
    assert (exact == 255).any() and (exact < 255).any()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_lut_grey_writes_all_three_components(dtype: type[np.unsignedinteger]) -> None:
    table, index = _cases(dtype, True)
    got = np.zeros((*index.shape, 3), dtype=np.uint8)
    want = got.copy()
    kernels.lut_grey(got, table, index)
    kernels.lut_grey_numpy(want, table, index)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[..., 2], table[index])


def test_warm_compiles_without_error() -> None:
    kernels.warm()
