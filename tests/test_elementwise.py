"""Activations and their gradients (leaky_relu, relu, sigmoid, tanh) against TensorFlow.

Tolerance: 1e-6 relative. leaky_relu and relu are exact selects (and a float32 product, as TF's);
pyai's sigmoid and tanh are within ~2 ulp (2.7e-7) of exact and TensorFlow's float32 ones, Eigen
approximations, within 5e-7 (measured); 1e-6 covers both, while a wrong slope, a wrong select at
0 or a series used outside its range is off by far more.
Shapes: a single element, primes and a large odd size, so no shape is a multiple of a SIMD width
or of the thread count.
"""

import numpy as np
import pytest

from conftest import assert_close, require, skip_in_cuda_simulator
from pyai import ops
from pyai.kernels.numba_cpu import leaky_relu, relu, sigmoid, tanh

# TensorFlow is the reference; a machine without it (the GPU machine) uses tests/golden
tf = pytest.importorskip("tensorflow")

TOL = 1e-6
SHAPES = [(1,), (7, 13), (3, 5, 17), (1_000_003,)]
ALPHAS = [0.2, 0.01, 0.0, 1.5]


def random_input(rng, shape):
    """Normal values of scale 3 with every 7th element exactly 0 (the select's edge case)."""
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    x.reshape(-1)[1::7] = 0
    return x


def tensorflow_gradient(function, x, dy):
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = function(x)
    return tape.gradient(y, x, output_gradients=tf.constant(dy)).numpy()


def check(name, backend, shape, out, ref):
    assert out.dtype == np.float32, f"{name}: dtype {out.dtype}, expected float32"
    assert_close(f"{backend} {name}, shape {shape}", out, ref, TOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_leaky_relu_forward(backend, rng, shape, alpha):
    require("leaky_relu", backend)
    if np.prod(shape) > 10_000:
        skip_in_cuda_simulator(backend, f"shape {shape}")
    x = random_input(rng, shape)
    y = ops.leaky_relu(x, alpha)
    check("leaky_relu y", backend, shape, y, tf.nn.leaky_relu(x, alpha=alpha).numpy())
    check("leaky_relu y vs numpy", backend, shape, y,
          leaky_relu.leaky_relu_forward_reference(x, alpha))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_leaky_relu_gradient(backend, rng, shape, alpha):
    require("leaky_relu_grad", backend)
    if np.prod(shape) > 10_000:
        skip_in_cuda_simulator(backend, f"shape {shape}")
    x, dy = random_input(rng, shape), rng.standard_normal(shape).astype(np.float32)
    dx = ops.leaky_relu_grad(dy, x, alpha)
    check("leaky_relu dx", backend, shape, dx,
          tensorflow_gradient(lambda v: tf.nn.leaky_relu(v, alpha=alpha), x, dy))
    check("leaky_relu dx vs numpy", backend, shape, dx,
          leaky_relu.leaky_relu_backward_reference(dy, x, alpha))


def test_leaky_relu_gradient_at_zero_is_alpha(backend, rng):
    require("leaky_relu_grad", backend)
    dy = rng.uniform(1, 2, size=5).astype(np.float32)
    dx = ops.leaky_relu_grad(dy, np.zeros(5, np.float32), alpha=0.3)
    np.testing.assert_array_equal(dx, np.float32(0.3) * dy)


@pytest.mark.parametrize("shape", SHAPES)
def test_relu_forward(backend, rng, shape):
    require("relu", backend)
    x = random_input(rng, shape)
    y = ops.relu(x)
    check("relu y", backend, shape, y, tf.nn.relu(x).numpy())
    check("relu y vs numpy", backend, shape, y, relu.relu_forward_reference(x))


@pytest.mark.parametrize("shape", SHAPES)
def test_relu_gradient(backend, rng, shape):
    require("relu_grad", backend)
    x, dy = random_input(rng, shape), rng.standard_normal(shape).astype(np.float32)
    dx = ops.relu_grad(dy, x)
    check("relu dx", backend, shape, dx, tensorflow_gradient(tf.nn.relu, x, dy))
    check("relu dx vs numpy", backend, shape, dx, relu.relu_backward_reference(dy, x))


# op name -> (pyai forward, TensorFlow forward, TensorFlow's gradient op, numpy reference module)
SMOOTH = {
    "sigmoid": (ops.sigmoid, tf.sigmoid, tf.raw_ops.SigmoidGrad, sigmoid),
    "tanh": (ops.tanh, tf.tanh, tf.raw_ops.TanhGrad, tanh),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", SMOOTH)
def test_smooth_forward(backend, rng, shape, name):
    require(name, backend)
    if np.prod(shape) > 10_000:
        skip_in_cuda_simulator(backend, f"shape {shape}")
    forward, tensorflow_forward, _, module = SMOOTH[name]
    x = random_input(rng, shape)
    y = forward(x)
    check(f"{name} y", backend, shape, y, tensorflow_forward(x).numpy())
    check(f"{name} y vs numpy", backend, shape, y, getattr(module, f"{name}_forward_reference")(x))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", SMOOTH)
def test_smooth_gradient_from_output(backend, rng, shape, name):
    """Against the op TensorFlow's tape runs for these (SigmoidGrad, TanhGrad), fed the same y:
    near saturation 1 - y^2 and y (1 - y) cancel, so TF's slightly different y of its own would
    move the gradient there by far more than the kernel's rounding."""
    require(name, backend)
    require(f"{name}_grad", backend)
    if np.prod(shape) > 10_000:
        skip_in_cuda_simulator(backend, f"shape {shape}")
    forward, _, tensorflow_gradient_op, module = SMOOTH[name]
    x, dy = random_input(rng, shape), rng.standard_normal(shape).astype(np.float32)
    y = forward(x)
    dx = getattr(ops, f"{name}_grad")(dy, y)
    check(f"{name} dx", backend, shape, dx, tensorflow_gradient_op(y=y, dy=dy).numpy())
    check(f"{name} dx vs numpy", backend, shape, dx,
          getattr(module, f"{name}_backward_reference")(dy, y))


@pytest.mark.parametrize("name", SMOOTH)
def test_smooth_forward_is_accurate_everywhere(backend, name):
    """Every element within a few ulp (4e-7 relative) of the float64 value, on a dense grid and
    on tiny inputs, where a norm over random inputs would hide a bad range; results below the
    smallest normal float32 (sigmoid of x < -87.3) may be flushed to 0, as TensorFlow does."""
    require(name, backend)
    skip_in_cuda_simulator(backend, "420,001 elements")
    grid = np.linspace(-100, 100, 400_001, dtype=np.float32)
    tiny = np.geomspace(1e-30, 1, 10_000, dtype=np.float32)
    x = np.concatenate([grid, tiny, -tiny])
    module = SMOOTH[name][3]
    exact = getattr(module, f"{name}_forward_reference")(x)
    np.testing.assert_allclose(getattr(ops, name)(x), exact, rtol=4e-7, atol=1.2e-38,
                               err_msg=f"{backend} {name}")


@pytest.mark.parametrize("name, limits", [("sigmoid", (0.0, 1.0)), ("tanh", (-1.0, 1.0))])
def test_saturates_exactly_without_overflow(backend, name, limits):
    require(name, backend)
    x = np.array([-1000, 1000, -np.inf, np.inf, -100, 100], np.float32)
    with np.errstate(all="raise"):
        y = getattr(ops, name)(x)
    np.testing.assert_array_equal(y[:4], [limits[0], limits[1], limits[0], limits[1]])
    np.testing.assert_allclose(y, SMOOTH[name][1](x).numpy(), rtol=0, atol=1e-30)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_gradient_vanishes_when_saturated(backend, rng, name):
    require(f"{name}_grad", backend)
    y = getattr(ops, name)(np.array([-1000, 1000], np.float32))
    dx = getattr(ops, f"{name}_grad")(rng.uniform(1, 2, size=2).astype(np.float32), y)
    np.testing.assert_array_equal(dx, [0, 0])


@pytest.mark.parametrize("name", ["leaky_relu", "relu", "sigmoid", "tanh"])
def test_nan_propagates(backend, name):
    require(name, backend)
    y = getattr(ops, name)(np.array([np.nan, 1, -1], np.float32))
    assert np.isnan(y[0]) and not np.isnan(y[1:]).any(), f"{backend} {name}: {y}"


@pytest.mark.parametrize("name, first, second", [
    ("leaky_relu_grad", "dy", "x"), ("relu_grad", "dy", "x"),
    ("sigmoid_grad", "dy", "y"), ("tanh_grad", "dy", "y")])
def test_gradient_rejects_mismatched_shapes(backend, name, first, second):
    require(name, backend)
    with pytest.raises(ValueError, match=f"^{first}: .*shape of {second}"):
        getattr(ops, name)(np.ones((3, 4), np.float32), np.ones((4, 3), np.float32))


@pytest.mark.parametrize("name", ["leaky_relu", "relu", "sigmoid", "tanh"])
def test_rejects_complex_input(backend, name):
    require(name, backend)
    with pytest.raises(TypeError, match="^x: .*complex"):
        getattr(ops, name)(np.ones(4, np.complex64))


@pytest.mark.parametrize("name", ["leaky_relu", "relu", "sigmoid", "tanh"])
def test_converts_float64_and_non_contiguous_input(backend, rng, name):
    require(name, backend)
    x64 = 3 * rng.standard_normal((6, 10))
    strided = random_input(rng, (10, 6)).T
    expected = getattr(ops, name)(x64.astype(np.float32))
    out = getattr(ops, name)(x64)
    assert out.dtype == np.float32 and out.shape == (6, 10)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(getattr(ops, name)(strided),
                                  getattr(ops, name)(np.ascontiguousarray(strided)))


def test_gradient_accepts_non_contiguous_input(backend, rng):
    require("leaky_relu_grad", backend)
    x, dy = random_input(rng, (10, 6)).T, rng.standard_normal((10, 6)).astype(np.float32).T
    dx = ops.leaky_relu_grad(dy, x, 0.2)
    check("leaky_relu dx, transposed inputs", backend, x.shape, dx,
          tensorflow_gradient(lambda v: tf.nn.leaky_relu(v, alpha=0.2), np.ascontiguousarray(x),
                              np.ascontiguousarray(dy)))
