"""The plain matmul a first run uses while matmul.py compiles: the same floats as matmul.py's
three loops, bit for bit (the same fused multiply-adds in the same order, the same epilogue),
and within float32 rounding of a float64 reference."""

import numpy as np
import pytest

from conftest import assert_close
from pyai.kernels.common import ACTIVATIONS
from pyai.kernels.numba_cpu import blocking, leaky_relu, matmul, plain_matmul

# (M, K, N): 1s, primes, columns not a multiple of the vector width, K past one and two slices
# (KC = 256), one column (gemv), 129 rows for the blocked loop, 100 x 256 x 128 for the parallel
# few-rows loop (past SERIAL_FLOPS); 389 x 600 x 200 and 1000 x 300 x 64 for the blocked loop
# reading A's rows in place (matmul.IN_PLACE_A_COLUMNS; the plain loop always packs), with a
# ragged last sliver of rows (packed) and of columns; 64 x 1100 x 480 made as C^T and turned
# (matmul.turns_product)
SIZES = [(1, 1, 1), (7, 13, 5), (37, 300, 70), (5, 257, 16), (37, 300, 1), (129, 600, 33), (100, 256, 128),
         (389, 600, 200), (1000, 300, 64), (64, 1100, 480)]


def test_the_sizes_take_the_turned_product():
    assert [(m, k, n) for m, k, n in SIZES if matmul.turns_product(m, n, k, True)] == [(64, 1100, 480)]


@pytest.mark.parametrize("m, k, n", SIZES)
@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False), (False, True), (True, True)])
def test_the_plain_matmul_gives_the_matmuls_floats_bit_for_bit(rng, m, k, n, transpose_a, transpose_b):
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    for activation in ACTIVATIONS:
        for with_bias in (None, bias):
            plain = plain_matmul.fused_matmul(a, b, transpose_a, transpose_b, with_bias, activation, 0.3)
            fast = matmul.fused_matmul(a, b, transpose_a, transpose_b, with_bias, activation, 0.3)
            assert np.array_equal(plain, fast), (activation, with_bias is not None, np.abs(plain - fast).max())
    times = rng.standard_normal((m, n)).astype(np.float32)
    plain = plain_matmul.matmul_times(a, b, transpose_a, transpose_b, times)
    assert np.array_equal(plain, matmul.matmul_times(a, b, transpose_a, transpose_b, times))
    assert np.array_equal(plain, plain_matmul.matmul(a, b, transpose_a, transpose_b) * times)
    plain = plain_matmul.matmul_leaky_relu_grad(a, b, transpose_a, transpose_b, times, 0.3)
    assert np.array_equal(plain, matmul.matmul_leaky_relu_grad(a, b, transpose_a, transpose_b, times, 0.3))
    assert np.array_equal(plain, leaky_relu.leaky_relu_backward(plain_matmul.matmul(a, b, transpose_a, transpose_b),
                                                                times, 0.3))
    reference = matmul.matmul_reference(a.T if transpose_a else a, b.T if transpose_b else b, bias, "leaky_relu", 0.3)
    # float32 sums of up to 600 products: 1e-5 relative
    assert_close("plain linear", plain_matmul.fused_matmul(a, b, transpose_a, transpose_b, bias, "leaky_relu", 0.3),
                 reference, 1e-5)


def test_the_plain_matmul_writes_into_out_and_cuts_k_as_the_matmul_does(rng):
    assert plain_matmul.KC == blocking.KC
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((4, 6)).astype(np.float32)
    out = np.full((3, 6), np.nan, np.float32)
    assert plain_matmul.matmul(a, b, False, False, out=out) is out
    assert_close("out", out, a.astype(np.float64) @ b, 1e-6)
    assert np.array_equal(plain_matmul.linear(a, b, None, None, 0.2), out)
