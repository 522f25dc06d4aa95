"""The bias gradient (ops.bias_grad: dy summed over every axis but the last) against TensorFlow's
reduce_sum and float64 numpy, and the Dense layer that uses it.

Tolerance: 1e-6 relative against float64. pyai sums each of up to 16 runs of rows (fixed by the row
count) in float32 and adds the partials in float64: at 50,177 rows ~2e-7 off (3,136 float32 terms
a partial).
TensorFlow sums all rows in float32 (~6e-6 off at 50,177 rows), so against it the tolerance is
the larger of 1e-6 and twice TensorFlow's own distance from float64. A dropped row (of ~50,000:
~2e-3 of a column sum of mean 0.5), a column summed into its neighbour or a missing partial is
far outside both.
Shapes: 1-d, a single row, row counts under and over the 16 runs and not a multiple of them,
3-d and 4-d (a convolution's dy), one column (summed as one run of floats), column counts past
four vectors and not a multiple of one, and past bias_grad.PARALLEL_ELEMENTS (the parallel compile).
"""

import numba
import numpy as np
import pytest

from conftest import assert_close, relative_error, require
from pyai import nn, ops
from pyai.kernels.numba_cpu import bias_grad

tf = pytest.importorskip("tensorflow")

TOL = 1e-6
SHAPES = [(1,), (1, 7), (7, 3), (17, 5), (3, 5, 17), (2, 3, 4, 33), (2048, 384), (50_177, 7), (101, 1), (50_177, 1),
          (300_007, 1), (61, 2, 97), (5_003, 97)]


def random_gradient(rng, shape):
    return (0.5 + rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_bias_grad_equals_tensorflow(backend, rng, shape):
    require("bias_grad", backend)
    dy = random_gradient(rng, shape)
    out = ops.bias_grad(dy)
    exact = bias_grad.bias_grad_reference(dy)
    expected = tf.reduce_sum(tf.reshape(dy, (-1, shape[-1])), axis=0).numpy()
    assert out.dtype == np.float32 and out.shape == (shape[-1],)
    assert_close(f"bias_grad {shape} vs float64", out, exact, TOL)
    tf_tol = max(TOL, 2 * relative_error(expected, exact))
    assert_close(f"bias_grad {shape} vs TensorFlow", out, expected, tf_tol)


@pytest.mark.parametrize("rows", [5, 8_000])
@pytest.mark.parametrize("columns", [1, 37])
def test_same_bits_on_one_thread_and_on_every_thread(rng, rows, columns):
    """The runs of rows are fixed, not one per thread: the serial compile, and the parallel one
    on one thread or on all, add the same floats in the same order."""
    dy = random_gradient(rng, (rows, columns))
    partials = [np.empty((bias_grad.partial_count(rows), columns), np.float32) for _ in range(3)]
    sums = [np.empty(columns, np.float32) for _ in range(3)]
    kernel = bias_grad.column_sums_kernel
    kernel.serial(dy, partials[0], sums[0])
    kernel.parallel(dy, partials[1], sums[1])
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        kernel.parallel(dy, partials[2], sums[2])
    finally:
        numba.set_num_threads(previous)
    for i in (1, 2):
        np.testing.assert_array_equal(partials[0], partials[i])
        np.testing.assert_array_equal(sums[0], sums[i])


def test_dense_bias_gradient_is_the_column_sum(rng):
    """Dense.backward's bias gradient, into its flat gradient buffer's view, is bias_grad's."""
    layer = nn.Dense(13, 29, activation="leaky_relu", rng=rng)
    x, dy = random_gradient(rng, (300, 13)), random_gradient(rng, (300, 29))
    y = layer.forward(x)
    layer.backward(dy)
    dpre = np.where(y > 0, dy, np.float32(layer.alpha) * dy)
    assert_close("Dense bias gradient", layer.grad_bias, dpre.astype(np.float64).sum(axis=0), TOL)


@pytest.mark.parametrize("dy, error, message", [
    (np.float32(1.0), ValueError, r"^dy: expected at least 1 dimension"),
    (np.ones((0, 3), np.float32), ValueError, r"^dy: has an empty dimension"),
    (np.ones((4, 0), np.float32), ValueError, r"^dy: has an empty dimension"),
    (np.array([["a", "b"]]), TypeError, r"^dy: expected an array of real numbers"),
    (np.ones((2, 2), np.complex64), TypeError, r"^dy: expected an array of real numbers"),
    (np.full((2, 2), 1e39), ValueError, r"^dy: holds 4 finite value"),
])
def test_bad_input_is_refused_naming_dy(dy, error, message):
    with pytest.raises(error, match=message):
        ops.bias_grad(dy)


def test_a_nan_reaches_its_own_column_only(rng):
    dy = random_gradient(rng, (50, 4))
    dy[7, 2] = np.nan
    out = ops.bias_grad(dy)
    assert np.isnan(out[2]) and np.all(np.isfinite(np.delete(out, 2)))
