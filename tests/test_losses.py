"""Losses (mse, binary cross-entropy from probabilities and from logits) against Keras 3.

Tolerance: 1e-6 relative, for the loss and for its gradient. pyai sums in float64; Keras sums
float32 terms in a tree, ~1e-7 relative off for a million elements, and rounds each term in
float32; 1e-6 covers that, while a loss averaged over the wrong count, a clip at the wrong bound
or a gradient missing its 1/n is off by far more.
Where float32 Keras subtracts rounded terms that cancel (t/p - (1-t)/(1-p) and sigmoid(z) - t
where t is near p, z - z t where t is near 1), its own error passes 1e-6 on a single element, so
there Keras is run in float64 (a Keras loss computes in its own dtype, float32 unless told) on
the same float32 inputs: the same function, computed accurately.
(Not for the loss from probabilities: Keras clips at 1 - 1e-7 in the input's dtype, which in
float32 is 1 - 2^-23, and that value is part of what pyai matches. There pyai's loss is held to
1e-6 of float64 and, against float32 Keras, to 1e-6 plus twice Keras's own distance from float64:
on a single element with t = 0 and p = 0.0106, Keras's float32 log(1 - p) is 2.2e-6 off.)
Keras reduces with a mean over the last axis and then over the rest; with every row the same
length that is the mean over all elements, which is what pyai computes.
"""

import numpy as np
import pytest

from conftest import assert_close, relative_error, require, skip_in_cuda_simulator
from pyai import ops
from pyai.kernels.numba_cpu import binary_crossentropy, mse

# TensorFlow is the reference; a machine without it (the GPU machine) uses tests/golden
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

TOL = 1e-6
SHAPES = [(1,), (7, 13), (3, 5, 17), (1_000_003,)]
LOW, HIGH = np.float32(1e-7), np.float32(1 - 1e-7)   # Keras's clip of probabilities


def keras_loss_and_gradient(loss_class, target, prediction, dtype="float32", **options):
    """Keras's loss and its gradient with respect to prediction, computed in `dtype`."""
    loss = loss_class(dtype=dtype, **options)
    prediction = tf.Variable(tf.cast(prediction, dtype))
    with tf.GradientTape() as tape:
        value = loss(tf.constant(target, dtype), prediction)
    return float(value), tape.gradient(value, prediction).numpy()


def pyai_loss_and_gradient(name, prediction, target, **options):
    return (getattr(ops, name)(prediction, target, **options),
            getattr(ops, f"{name}_grad")(prediction, target, **options))


def check(backend, what, shape, loss, gradient, expected_loss, expected_gradient, loss_tol=TOL):
    assert isinstance(loss, float), f"{backend} {what}: loss is {type(loss).__name__}, not float"
    assert gradient.dtype == np.float32 and gradient.shape == shape
    assert_close(f"{backend} {what} loss, shape {shape}", loss, expected_loss, loss_tol)
    assert_close(f"{backend} {what} gradient, shape {shape}", gradient, expected_gradient, TOL)


def probabilities(rng, shape):
    """Uniform in [0, 1] with exact 0, 1 and both clip bounds sprinkled in."""
    p = rng.uniform(0, 1, size=shape).astype(np.float32)
    for start, value in enumerate([0, 1, LOW, HIGH]):
        p.reshape(-1)[start + 1::11] = value
    return p


def targets(rng, shape):
    """Half hard labels (0 or 1), half soft labels in [0, 1]."""
    t = rng.integers(0, 2, size=shape).astype(np.float32)
    soft = rng.uniform(0, 1, size=shape).astype(np.float32)
    return np.where(rng.uniform(size=shape) < 0.5, t, soft).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_mse(backend, rng, shape):
    require("mse", backend)
    require("mse_grad", backend)
    prediction, target = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    loss, gradient = pyai_loss_and_gradient("mse", prediction, target)
    check(backend, "mse", shape, loss, gradient,
          *keras_loss_and_gradient(keras.losses.MeanSquaredError, target, prediction))
    assert_close(f"{backend} mse loss vs numpy", loss,
                 mse.mse_forward_reference(prediction, target), TOL)
    assert_close(f"{backend} mse gradient vs numpy", gradient,
                 mse.mse_backward_reference(prediction, target), TOL)


def test_mse_accumulates_in_float64(backend):
    """A million equal terms: a float32 running sum of them is 1.3e-2 off, a float64 one 1e-12."""
    require("mse", backend)
    prediction = np.full(1_000_003, 0.1, np.float32)
    target = np.full(1_000_003, -0.2, np.float32)
    exact = (np.float64(prediction[0]) - np.float64(target[0])) ** 2
    assert abs(ops.mse(prediction, target) / exact - 1) < 1e-9


@pytest.mark.parametrize("shape", SHAPES)
def test_binary_crossentropy_from_probabilities(backend, rng, shape):
    require("binary_crossentropy", backend)
    require("binary_crossentropy_grad", backend)
    p, t = probabilities(rng, shape), targets(rng, shape)
    loss, gradient = pyai_loss_and_gradient("binary_crossentropy", p, t)
    expected_loss, _ = keras_loss_and_gradient(keras.losses.BinaryCrossentropy, t, p)
    _, expected_gradient = keras_loss_and_gradient(keras.losses.BinaryCrossentropy, t, p, "float64")
    exact_loss = binary_crossentropy.bce_forward_reference(p, t)
    check(backend, "bce", shape, loss, gradient, expected_loss, expected_gradient,
          loss_tol=TOL + 2 * relative_error(expected_loss, exact_loss))
    assert_close(f"{backend} bce loss vs numpy", loss, exact_loss, TOL)
    assert_close(f"{backend} bce gradient vs numpy", gradient,
                 binary_crossentropy.bce_backward_reference(p, t), TOL)


def test_binary_crossentropy_at_the_clip(backend):
    """Exactly 0 and 1 are clipped (finite loss, zero gradient, as Keras); the bounds themselves
    and anything inside pass the gradient, as tf.clip_by_value's gradient does."""
    require("binary_crossentropy_grad", backend)
    p = np.array([0, 1, 0, 1, LOW, HIGH, LOW, HIGH, 0.25,
                  np.nextafter(LOW, np.float32(0)), np.nextafter(HIGH, np.float32(1))], np.float32)
    t = np.array([1, 0, 0, 1, 1, 0, 0.5, 0.5, 0.75, 1, 0], np.float32)
    loss, gradient = pyai_loss_and_gradient("binary_crossentropy", p, t)
    expected_loss, expected_gradient = keras_loss_and_gradient(
        keras.losses.BinaryCrossentropy, t, p)
    assert np.isfinite(loss) and np.all(np.isfinite(gradient))
    assert_close(f"{backend} bce loss at the clip", loss, expected_loss, TOL)
    np.testing.assert_array_equal(gradient[[0, 1, 2, 3, 9, 10]], 0)
    assert np.all(gradient[4:9] != 0)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=TOL)


@pytest.mark.parametrize("shape", SHAPES)
def test_binary_crossentropy_from_logits(backend, rng, shape):
    require("binary_crossentropy_logits", backend)
    require("binary_crossentropy_logits_grad", backend)
    if np.prod(shape) > 10_000:
        skip_in_cuda_simulator(backend, f"shape {shape}")
    z, t = (5 * rng.standard_normal(shape)).astype(np.float32), targets(rng, shape)
    z.reshape(-1)[1::13] = 0
    loss, gradient = pyai_loss_and_gradient("binary_crossentropy", z, t, from_logits=True)
    check(backend, "bce from logits", shape, loss, gradient,
          *keras_loss_and_gradient(keras.losses.BinaryCrossentropy, t, z, "float64",
                                   from_logits=True))
    assert_close(f"{backend} bce logits loss vs numpy", loss,
                 binary_crossentropy.bce_logits_forward_reference(z, t), TOL)
    assert_close(f"{backend} bce logits gradient vs numpy", gradient,
                 binary_crossentropy.bce_logits_backward_reference(z, t), TOL)


@pytest.mark.parametrize("scale", [100, 1000])
def test_binary_crossentropy_from_extreme_logits(backend, rng, scale):
    require("binary_crossentropy_logits_grad", backend)
    z = (scale * rng.choice([-1, 1], size=1000)).astype(np.float32)
    t = targets(rng, (1000,))
    loss, gradient = pyai_loss_and_gradient("binary_crossentropy", z, t, from_logits=True)
    assert np.isfinite(loss) and np.all(np.isfinite(gradient))
    check(backend, f"bce from logits +-{scale}", (1000,), loss, gradient,
          *keras_loss_and_gradient(keras.losses.BinaryCrossentropy, t, z, "float64",
                                   from_logits=True))


LOSSES = [("mse", {}), ("binary_crossentropy", {}), ("binary_crossentropy", {"from_logits": True})]


@pytest.mark.parametrize("name, options", LOSSES)
@pytest.mark.parametrize("gradient", [False, True])
def test_rejects_mismatched_shapes(backend, name, options, gradient):
    require(name, backend)
    function = getattr(ops, f"{name}_grad" if gradient else name)
    with pytest.raises(ValueError, match=r"^target: .*shape of prediction \(3, 4\)"):
        function(np.ones((3, 4), np.float32), np.ones((4, 3), np.float32), **options)


@pytest.mark.parametrize("name, options", LOSSES)
def test_rejects_complex_input(backend, name, options):
    require(name, backend)
    with pytest.raises(TypeError, match="^prediction: .*complex"):
        getattr(ops, name)(np.full(4, 0.5, np.complex64), np.ones(4, np.float32), **options)
    with pytest.raises(TypeError, match="^target: .*complex"):
        getattr(ops, f"{name}_grad")(np.full(4, 0.5, np.float32), np.ones(4, np.complex128),
                                     **options)


@pytest.mark.parametrize("name, options", LOSSES)
def test_converts_float64_and_non_contiguous_input(backend, rng, name, options):
    require(name, backend)
    prediction = rng.uniform(0.1, 0.9, size=(10, 6)).T       # float64, transposed
    target = rng.uniform(0, 1, size=(6, 10))
    expected_loss, expected_gradient = pyai_loss_and_gradient(
        name, np.ascontiguousarray(prediction, np.float32), target.astype(np.float32), **options)
    loss, gradient = pyai_loss_and_gradient(name, prediction, target, **options)
    assert loss == expected_loss
    assert gradient.dtype == np.float32
    np.testing.assert_array_equal(gradient, expected_gradient)
