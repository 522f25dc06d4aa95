"""GELU (tanh approximation), softmax and fused softmax cross-entropy against TensorFlow/Keras.

Tolerance: 1e-6 relative. Each output is a few float32 roundings from exact (the exp within
~1.2 ulp; softmax's row sum in float64); 1e-6 catches the exact GELU (erf) instead of the tanh
form (~1e-4 apart), a missing 1/N in the loss or its gradient, or a row max taken over the
wrong axis. Except GELU against TensorFlow, at 1e-4: TF computes 0.5 x (1 + tanh u), which
cancels for negative x (up to 7e-5 off float64 at x = -3), so pyai's GELU is held to 1e-6
against float64 and to TensorFlow's own accuracy against TensorFlow. So are softmax and the
cross-entropy, where TensorFlow's float32 is the worse (tf_tolerance): pyai's target gradient is
(exp - sum) / (sum N) in float64, TensorFlow's p - 1 in float32 cancels where p is near 1.
GELU inputs are uniform in [-2.5, 5]: below that both float32 versions lose digits to the exp
of a large rounded argument (that region has its own test).
Shapes: a single element, primes, a long vocabulary row, and a large odd size; none is a
multiple of a SIMD width or of the thread count.
"""

import numpy as np
import pytest

from conftest import assert_close, relative_error, require, skip_in_cuda_simulator
from pyai import ops
from pyai.kernels.numba_cpu.gelu import gelu_backward_reference, gelu_forward_reference
from pyai.kernels.numba_cpu.softmax import softmax_reference
from pyai.kernels.numba_cpu.softmax_cross_entropy import softmax_cross_entropy_reference

# TensorFlow is the reference; a machine without it (the GPU machine) uses tests/golden
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

TOL = 1e-6
GELU_TF_TOL = 1e-4
SHAPES = [(1,), (7, 13), (3, 5, 17), (1_000_003,)]
ROWS = [(1, 1), (1, 7), (13, 50_257), (300, 37)]


def tf_tolerance(tf_result, exact):
    """Against TensorFlow: TOL (pyai's own distance from float64, asserted beside it) plus twice
    TensorFlow's own distance from float64, since the two errors can add (its float32 softmax of
    a 13 x 50,257 row and its loss and gradient where the target holds almost all the mass were up
    to 6e-5 off float64; a 1 x 7 loss 1.08e-6 from pyai's with both within 1e-6 of float64)."""
    return TOL + 2 * relative_error(tf_result, exact)


def tensorflow_gradient(function, x, dy):
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = function(x)
    return tape.gradient(y, x, output_gradients=tf.constant(dy)).numpy()


@pytest.mark.parametrize("shape", SHAPES)
def test_gelu_equals_tensorflow_and_keras(backend, rng, shape):
    require("gelu", backend)
    if np.prod(shape) > 10_000:
        skip_in_cuda_simulator(backend, f"shape {shape}")
    x = rng.uniform(-2.5, 5, shape).astype(np.float32)
    y = ops.gelu(x)
    assert y.dtype == np.float32 and y.shape == shape
    assert_close(f"gelu {backend} {shape} vs tf.nn.gelu", y,
                 tf.nn.gelu(x, approximate=True).numpy(), GELU_TF_TOL)
    assert_close(f"gelu {backend} {shape} vs Keras", y,
                 keras.activations.gelu(x, approximate=True).numpy(), GELU_TF_TOL)
    assert_close(f"gelu {backend} {shape} vs float64", y, gelu_forward_reference(x), TOL)


@pytest.mark.parametrize("shape", [(5,)] + SHAPES[1:])
def test_gelu_gradient_equals_tensorflow(backend, rng, shape):
    """gelu' crosses 0 at x = -0.75, where its two terms cancel: a norm over one element would
    measure rounding noise against ~0 there, so the smallest case has five."""
    require("gelu_grad", backend)
    if np.prod(shape) > 10_000:
        skip_in_cuda_simulator(backend, f"shape {shape}")
    x = rng.uniform(-2.5, 5, shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    dx = ops.gelu_grad(dy, x)
    ref = tensorflow_gradient(lambda t: tf.nn.gelu(t, approximate=True), x, dy)
    assert_close(f"gelu dx {backend} {shape} vs TF", dx, ref, GELU_TF_TOL)
    assert_close(f"gelu dx {backend} {shape} vs float64", dx, gelu_backward_reference(dy, x), TOL)


@pytest.mark.parametrize("shape", [(5,)] + SHAPES[1:])
def test_gelu_derivative_is_tensorflows_and_gives_gelu_grads_floats(backend, rng, shape):
    """ops.gelu(x, return_derivative=True): y is gelu(x)'s, bit for bit; the derivative is TF's
    gradient of gelu at dy = 1, and dy times it is gelu_grad(dy, x), bit for bit, whether the
    backend makes it with y or by gelu_grad."""
    require("gelu_grad", backend)
    if np.prod(shape) > 10_000:
        skip_in_cuda_simulator(backend, f"shape {shape}")
    x = rng.uniform(-2.5, 5, shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y, derivative = ops.gelu(x, return_derivative=True)
    assert y.dtype == derivative.dtype == np.float32 and y.shape == derivative.shape == shape
    np.testing.assert_array_equal(y, ops.gelu(x))
    np.testing.assert_array_equal(dy * derivative, ops.gelu_grad(dy, x))
    ones = np.ones(shape, np.float32)
    assert_close(f"gelu' {backend} {shape} vs TF", derivative,
                 tensorflow_gradient(lambda t: tf.nn.gelu(t, approximate=True), x, ones), GELU_TF_TOL)
    assert_close(f"gelu' {backend} {shape} vs float64", derivative, gelu_backward_reference(ones, x), TOL)


def test_gelu_derivative_keeps_nan_and_takes_only_a_flag(backend):
    require("gelu_grad", backend)
    y, derivative = ops.gelu(np.array([np.nan, 1, -1], np.float32), return_derivative=True)
    assert np.isnan(y[0]) and np.isnan(derivative[0])
    assert np.isfinite(y[1:]).all() and np.isfinite(derivative[1:]).all()
    with pytest.raises(TypeError, match="^return_derivative: "):
        ops.gelu(np.ones(3, np.float32), return_derivative="yes")


def test_gelu_negative_tail_keeps_its_digits(backend):
    """x in [-9, -3]: y is 1e-3 down to 1e-25, where 1 + tanh u has cancelled away in float32;
    each element stays within 2 |u| ulp (u's rounding, magnified by the exp) plus a few."""
    require("gelu_grad", backend)
    x = np.linspace(-9, -3, 1001, dtype=np.float32)
    u = np.sqrt(2 / np.pi) * (x + 0.044715 * x.astype(np.float64) ** 3)
    bound = (2 * np.abs(u) + 4) * 2**-23
    for name, out, exact in (("y", ops.gelu(x), gelu_forward_reference(x)),
                             ("dx", ops.gelu_grad(np.ones_like(x), x),
                              gelu_backward_reference(1.0, x))):
        relative = np.abs(out - exact) / np.abs(exact)
        assert np.all(relative <= bound), f"gelu {name} at x={x[np.argmax(relative / bound)]}"


def test_gelu_saturates_without_overflow(backend):
    """x^3 of 1e4 is 1e12 and of 1e15 overflows float32: still x for large x, 0 for large -x."""
    require("gelu_grad", backend)
    x = np.array([-1e15, -1e4, -30, 30, 1e4, 1e15], np.float32)
    np.testing.assert_array_equal(ops.gelu(x), np.float32([0, 0, 0, 30, 1e4, 1e15]))
    np.testing.assert_array_equal(ops.gelu_grad(np.ones(4, np.float32), x[1:5]), [0, 0, 1, 1])


@pytest.mark.parametrize("shape", SHAPES[:3] + [(13, 50_257)])
def test_softmax_equals_tensorflow(backend, rng, shape):
    require("softmax", backend)
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    y = ops.softmax(x)
    assert y.dtype == np.float32 and y.shape == shape
    exact, expected = softmax_reference(x), tf.nn.softmax(x, axis=-1).numpy()
    assert_close(f"softmax {backend} {shape} vs TF", y, expected, tf_tolerance(expected, exact))
    assert_close(f"softmax {backend} {shape} vs float64", y, exact, TOL)


def test_softmax_of_huge_logits_is_finite_and_exact(backend):
    require("softmax", backend)
    x = np.array([[1e4, -1e4, 0], [-1e4, -1e4, -1e4], [3e38, 0, -3e38]], np.float32)
    y = ops.softmax(x)
    np.testing.assert_array_equal(y, np.float32([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [1, 0, 0]]))
    np.testing.assert_array_equal(y, tf.nn.softmax(x).numpy())


def tensorflow_cross_entropy(logits, targets):
    z = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, z))
    return float(loss), tape.gradient(loss, z).numpy()


@pytest.mark.parametrize("rows,vocabulary", ROWS)
def test_softmax_cross_entropy_equals_tensorflow(backend, rng, rows, vocabulary):
    require("softmax_cross_entropy", backend)
    if rows * vocabulary > 10_000:
        skip_in_cuda_simulator(backend, f"cross-entropy {rows}x{vocabulary}")
    logits = (3 * rng.standard_normal((rows, vocabulary))).astype(np.float32)
    targets = rng.integers(0, vocabulary, rows)
    loss, dlogits = ops.softmax_cross_entropy(logits, targets)
    tf_loss, tf_dlogits = tensorflow_cross_entropy(logits, targets)
    exact_loss, exact_dlogits = softmax_cross_entropy_reference(logits, targets)
    assert isinstance(loss, float) and dlogits.dtype == np.float32
    name = f"cross-entropy {backend} {rows}x{vocabulary}"
    assert_close(f"{name} loss vs TF", loss, tf_loss, tf_tolerance(tf_loss, exact_loss))
    assert_close(f"{name} loss vs float64", loss, exact_loss, TOL)
    assert_close(f"{name} dlogits vs TF", dlogits, tf_dlogits, tf_tolerance(tf_dlogits, exact_dlogits))
    assert_close(f"{name} dlogits vs float64", dlogits, exact_dlogits, TOL)


def test_softmax_cross_entropy_of_huge_logits_is_finite(backend):
    """Logits of +-1e4: the loss is 2e4 where the target's logit is -1e4, 0 where it is the max."""
    require("softmax_cross_entropy", backend)
    logits = np.array([[1e4, -1e4, 0], [1e4, -1e4, 0]], np.float32)
    targets = np.array([1, 0])
    loss, dlogits = ops.softmax_cross_entropy(logits, targets)
    tf_loss, tf_dlogits = tensorflow_cross_entropy(logits, targets)
    assert loss == 1e4 == tf_loss
    np.testing.assert_array_equal(dlogits, [[0.5, -0.5, 0], [0, 0, 0]])
    np.testing.assert_array_equal(dlogits, tf_dlogits)


def masked_logits(rng):
    """Three rows: ordinary, -inf only (every position masked), -inf at every other position."""
    logits = rng.standard_normal((3, 37)).astype(np.float32)
    logits[1] = -np.inf
    logits[2, ::2] = -np.inf
    return logits


def test_softmax_of_a_fully_masked_row_is_zero(backend, rng):
    """0s where TensorFlow gives NaN (-inf - -inf); the other rows are as without it."""
    require("softmax", backend)
    logits = masked_logits(rng)
    y = ops.softmax(logits)
    np.testing.assert_array_equal(y[1], np.zeros(37, np.float32))
    assert_close(f"softmax {backend}, the other rows", y[[0, 2]], softmax_reference(logits[[0, 2]]), TOL)


def test_cross_entropy_of_a_fully_masked_row_is_infinite(backend, rng):
    """p = 0 at the target: a loss of +inf (-log 0), the gradient -1/N at the target, 0
    elsewhere; the other rows' gradients are as without it."""
    require("softmax_cross_entropy", backend)
    logits, targets = masked_logits(rng), np.array([4, 5, 7])
    loss, dlogits = ops.softmax_cross_entropy(logits, targets)
    expected = np.zeros(37, np.float32)
    expected[5] = -np.float32(1 / 3)
    np.testing.assert_array_equal(dlogits[1], expected)
    assert loss == np.inf
    _, other_rows = softmax_cross_entropy_reference(logits[[0, 2]], targets[[0, 2]])
    assert_close(f"cross-entropy {backend}, the other rows", dlogits[[0, 2]] * 3 / 2, other_rows, TOL)


LOGITS = np.zeros((4, 5), np.float32)


@pytest.mark.parametrize("call,error,argument", [
    (lambda: ops.softmax_cross_entropy(LOGITS, [0, 1, 2, 5]), ValueError, "targets"),
    (lambda: ops.softmax_cross_entropy(LOGITS, [0, 1, -1, 2]), ValueError, "targets"),
    (lambda: ops.softmax_cross_entropy(LOGITS, [0, 1, 2]), ValueError, "targets"),
    (lambda: ops.softmax_cross_entropy(LOGITS, [[0, 1, 2, 3]]), ValueError, "targets"),
    (lambda: ops.softmax_cross_entropy(LOGITS, [0.0, 1.0, 2.0, 3.0]), TypeError, "targets"),
    (lambda: ops.softmax_cross_entropy(LOGITS[0], [0]), ValueError, "logits"),
    (lambda: ops.softmax_cross_entropy(LOGITS[:, :0], [0, 0, 0, 0]), ValueError, "logits"),
    (lambda: ops.softmax(np.float32(1)), ValueError, "x"),
    (lambda: ops.gelu_grad(LOGITS, LOGITS[0]), ValueError, "dy"),
])
def test_bad_arguments_raise_errors_naming_the_argument(call, error, argument):
    with pytest.raises(error, match=rf"^{argument}:"):
        call()


def test_out_of_range_target_error_says_where():
    message = r"^targets: expected values in \[0, 5\), got 7 at index \(2,\)"
    with pytest.raises(ValueError, match=message):
        ops.softmax_cross_entropy(LOGITS, [0, 1, 7, 2])
