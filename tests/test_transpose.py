"""transpose.transposed: a matrix, or chosen matrices of a stack, turned, against numpy."""

import numpy as np
import pytest

from pyai.kernels.numba_cpu import simd
from pyai.kernels.numba_cpu.transpose import transposed, transposed_reference

WIDTH = simd.WIDTH


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (37, 1), (13, 2 * WIDTH + 3), (128, 1024), (64, 576)])
def test_transposed_matrix_equals_numpys(rng, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    a[0, -1], a[-1, 0] = np.nan, -np.inf   # moved like any float
    out = transposed(a)
    assert out.shape == shape[::-1] and out.flags.c_contiguous
    np.testing.assert_array_equal(out, a.T)


@pytest.mark.parametrize("taps", [None, [0], [3, 1, 3, 0]])
def test_transposed_stack_turns_the_chosen_matrices_in_order(rng, taps):
    a = rng.standard_normal((4, WIDTH + 5, 2 * WIDTH + 1)).astype(np.float32)
    out = transposed(a, taps)
    expected = transposed_reference(a, np.arange(4) if taps is None else np.array(taps))
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


def test_transposed_reads_a_strided_view_as_its_values(rng):
    a = rng.standard_normal((9, 2 * WIDTH)).astype(np.float32)[:, ::2]
    np.testing.assert_array_equal(transposed(a), a.T)
