"""Layer normalization and its gradients against Keras 3's LayerNormalization and float64 numpy.

Tolerance: 1e-6 relative against float64: pyai computes each row's statistics and the
backward's row in float64 and rounds once or twice per element. dx and dgamma are held to the
float64 gradient at the rstd the backward is given (the forward's, rounded to float32): on rows of
3 columns dx's terms cancel, and that rounding alone moves dx by up to ~1.5e-6 of itself (3,000
draws); dgamma's sum over 7 rows cancelled so that it moved 2.3e-6 (numba-cuda, 0.96e-6
numba-cpu, one draw), against 1.2e-7 and 4e-8 from the gradient at the given rstd. 1e-5 against Keras, which sums in float32: its dgamma and dbeta over 1000 rows are up to
~2e-6 off float64, its dx on rows of 3 columns ~2e-7 typically but up to ~1.5e-5 (its variance
is E[x^2] - mean^2), so against Keras the tolerance is the larger of 1e-5 and twice Keras's own
distance from float64. A wrong epsilon (1e-3 against 1e-5 moves y by ~1e-4 at unit variance), a
biased variance (C - 1 against C: 1/(2C) relative) or a dgamma summed over the wrong rows is far
outside both.
Inputs: mean 0.5 and scale 2, so the mean matters but does not dominate the spread (where it
does, float32 Keras cancels digits away: x * rstd - mean * rstd).
Shapes: three columns, odd widths, 1-d, 3-d and 4-d inputs, more rows than one dgamma/dbeta
slot holds (CHUNK_ROWS = 32), and rows of whole SIMD vectors (64 and 128 columns), whose backward
runs in float32 lanes unless its terms cancel (then in float64: a test of its own). A single
column (variance 0) has its own test: there float32 Keras computes beta as x rstd gamma - mean
rstd gamma + beta, terms ~1/sqrt(epsilon) times larger than the result, and is off by ~1e-5.
"""

import numpy as np
import pytest

from conftest import assert_close, relative_error, require, skip_in_cuda_simulator
from pyai import ops
from pyai.kernels.numba_cpu.layer_norm import layer_norm_backward_reference, layer_norm_forward_reference

# TensorFlow is the reference; a machine without it (the GPU machine) uses tests/golden
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

TOL = 1e-6
KERAS_TOL = 1e-5
SHAPES = [(7, 3), (13,), (3, 5, 17), (2, 3, 4, 33), (257, 300), (1000, 7), (40, 64), (3, 35, 128)]
EPSILONS = [1e-5, 1e-3]


def random_inputs(rng, shape):
    x = (0.5 + 2 * rng.standard_normal(shape)).astype(np.float32)
    gamma = (1 + 0.5 * rng.standard_normal(shape[-1])).astype(np.float32)
    beta = rng.standard_normal(shape[-1]).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    return x, gamma, beta, dy


def keras_layer_norm(x, gamma, beta, epsilon, dy):
    """Keras's y and its (dx, dgamma, dbeta) for upstream gradient dy."""
    layer = keras.layers.LayerNormalization(axis=-1, epsilon=epsilon)
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = layer(x)
    grads = tape.gradient(y, [x, layer.gamma, layer.beta], output_gradients=tf.constant(dy))
    return y.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("epsilon", EPSILONS)
def test_layer_norm_equals_keras(backend, rng, shape, epsilon):
    require("layer_norm", backend)
    if np.prod(shape[:-1]) > 16:
        skip_in_cuda_simulator(backend, f"{np.prod(shape[:-1])} rows")
    x, gamma, beta, dy = random_inputs(rng, shape)
    y, mean, rstd = ops.layer_norm(x, gamma, beta, epsilon=epsilon, return_stats=True)
    keras_y, _ = keras_layer_norm(x, gamma, beta, epsilon, dy)
    exact_y, exact_mean, exact_rstd = layer_norm_forward_reference(x, gamma, beta, epsilon)
    assert y.dtype == np.float32 and mean.shape == rstd.shape == shape[:-1]
    name = f"{backend} {shape} epsilon={epsilon}"
    assert_close(f"layer_norm y, {name}, vs Keras", y, keras_y, KERAS_TOL)
    assert_close(f"layer_norm y, {name}, vs float64", y, exact_y, TOL)
    assert_close(f"layer_norm mean, {name}", mean, exact_mean, TOL)
    assert_close(f"layer_norm rstd, {name}", rstd, exact_rstd, TOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("epsilon", EPSILONS)
def test_layer_norm_gradients_equal_keras(backend, rng, shape, epsilon):
    require("layer_norm_grad", backend)
    if np.prod(shape[:-1]) > 16:
        skip_in_cuda_simulator(backend, f"{np.prod(shape[:-1])} rows")
    x, gamma, beta, dy = random_inputs(rng, shape)
    _, mean, rstd = ops.layer_norm(x, gamma, beta, epsilon=epsilon, return_stats=True)
    grads = ops.layer_norm_grad(dy, x, gamma, mean, rstd)
    _, keras_grads = keras_layer_norm(x, gamma, beta, epsilon, dy)
    exact = layer_norm_backward_reference(dy, x, gamma, epsilon)
    at_saved_rstd = layer_norm_backward_reference(dy, x, gamma, epsilon, rstd=rstd)
    for tensor, out, ref, ref64, given64 in zip(("dx", "dgamma", "dbeta"), grads, keras_grads, exact,
                                                (*at_saved_rstd[:2], exact[2])):
        assert out.dtype == np.float32 and out.shape == ref.shape
        name = f"layer_norm {tensor}, {backend} {shape} epsilon={epsilon}"
        keras_tol = max(KERAS_TOL, 2 * relative_error(ref, ref64))
        assert_close(f"{name} vs Keras", out, ref, keras_tol)
        assert_close(f"{name} vs float64", out, given64, TOL)


@pytest.mark.parametrize("columns", [16, 128])
@pytest.mark.parametrize("scale", [1.0, 1e25])
def test_layer_norm_gradient_rows_that_cancel_equal_float64(backend, rng, columns, scale):
    """Rows whose dx is a small remainder of its terms: dy = x and gamma = 1 leave dx ~ epsilon /
    variance of dy's size, the rest cancelling (float32 lanes would be ~1e-2 off); every other row
    ordinary. Each held to float64 at the given rstd, the cancelling rows by themselves too. At
    scale 1e25 dy's squares overflow float32, where the cancelling cannot be measured in it."""
    require("layer_norm_grad", backend)
    skip_in_cuda_simulator(backend, "96 rows")
    x, _, beta, dy = random_inputs(rng, (96, columns))
    gamma = np.ones(columns, np.float32)
    dy[::2] = x[::2]
    dy *= np.float32(scale)
    _, mean, rstd = ops.layer_norm(x, gamma, beta, return_stats=True)
    grads = ops.layer_norm_grad(dy, x, gamma, mean, rstd)
    exact = layer_norm_backward_reference(dy, x, gamma, 1e-5, rstd=rstd)
    for tensor, out, ref in zip(("dx", "dgamma", "dbeta"), grads, exact):
        assert_close(f"layer_norm {tensor}, {backend}, {columns} columns, cancelling rows", out, ref, TOL)
    assert_close(f"layer_norm dx of the cancelling rows alone, {backend}", grads[0][::2], exact[0][::2], TOL)


def test_layer_norm_returns_y_alone_unless_asked(backend, rng):
    require("layer_norm", backend)
    x, gamma, beta, _ = random_inputs(rng, (4, 9))
    y = ops.layer_norm(x, gamma, beta)
    assert isinstance(y, np.ndarray) and y.shape == x.shape


@pytest.mark.parametrize("shape", [(3, 8), (5, 1)])
def test_constant_rows(backend, rng, shape):
    """Variance 0 (a constant row, or a single column): xhat = 0, so y = beta and dgamma = 0
    exactly, dbeta = sum dy, and dx = rstd (g - mean(g)), g = dy gamma (0 with one column)."""
    require("layer_norm_grad", backend)
    x = np.broadcast_to(rng.standard_normal((shape[0], 1)), shape).astype(np.float32)
    _, gamma, beta, dy = random_inputs(rng, shape)
    y, mean, rstd = ops.layer_norm(x, gamma, beta, return_stats=True)
    np.testing.assert_array_equal(y, np.broadcast_to(beta, shape))
    dx, dgamma, dbeta = ops.layer_norm_grad(dy, x, gamma, mean, rstd)
    np.testing.assert_array_equal(dgamma, 0)
    g = dy.astype(np.float64) * gamma
    assert_close("dx of constant rows", dx, (g - g.mean(-1, keepdims=True)) / np.sqrt(1e-5), TOL)
    assert_close("dbeta of constant rows", dbeta, dy.astype(np.float64).sum(0), TOL)


X = np.ones((4, 6), np.float32)
C = np.ones(6, np.float32)
STAT = np.ones(4, np.float32)


@pytest.mark.parametrize("call,argument", [
    (lambda: ops.layer_norm(X, C[:5], C), "gamma"),
    (lambda: ops.layer_norm(X, C, C[:, None]), "beta"),
    (lambda: ops.layer_norm(X[:, :0], C[:0], C[:0]), "x"),
    (lambda: ops.layer_norm(X, C, C, epsilon=0.0), "epsilon"),
    (lambda: ops.layer_norm(X, C, C, epsilon=-1e-5), "epsilon"),
    (lambda: ops.layer_norm_grad(X[:3], X, C, STAT, STAT), "dy"),
    (lambda: ops.layer_norm_grad(X, X, C[:4], STAT, STAT), "gamma"),
    (lambda: ops.layer_norm_grad(X, X, C, STAT[:3], STAT), "mean"),
    (lambda: ops.layer_norm_grad(X, X, C, STAT, X), "rstd"),
    (lambda: ops.layer_norm_grad(X, X, C, STAT, STAT, residual=X[:3]), "residual"),
])
def test_bad_shapes_and_arguments_raise_value_error_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        call()


@pytest.mark.parametrize("shape", SHAPES)
def test_a_residual_added_to_dx_as_it_is_written_gives_the_floats_of_adding_it_after(backend, rng, shape):
    """residual=: dx + residual in the same pass, bit for bit dx and then the float32 add; dgamma
    and dbeta as without it."""
    require("layer_norm_grad_residual", backend)
    x, gamma, beta, dy = random_inputs(rng, shape)
    residual = rng.standard_normal(shape).astype(np.float32)
    _, mean, rstd = ops.layer_norm(x, gamma, beta, return_stats=True)
    dx, dgamma, dbeta = ops.layer_norm_grad(dy, x, gamma, mean, rstd)
    summed, summed_dgamma, summed_dbeta = ops.layer_norm_grad(dy, x, gamma, mean, rstd, residual=residual)
    np.testing.assert_array_equal(summed, dx + residual)
    np.testing.assert_array_equal(summed_dgamma, dgamma)
    np.testing.assert_array_equal(summed_dbeta, dbeta)


def test_a_residual_elsewhere_is_not_implemented_error(rng):
    from pyai import dispatch
    for name in ("numba-cuda", "cuda"):
        if "layer_norm_grad_residual" not in dispatch.ops_of(name) and dispatch.unavailable_reason(name) is None:
            with pytest.raises(NotImplementedError, match="^residual: .* not implemented on backend"):
                ops.layer_norm_grad(X, X, C, STAT, STAT, residual=X, backend=name)
