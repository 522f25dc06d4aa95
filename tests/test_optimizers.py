"""In-place optimizer steps (SGD, Adam) against Keras 3's optimizers on tf.Variables.

Each test runs 5 steps with a fresh random gradient per step, through the same arrays, and
compares param (and Adam's m and v) with Keras's after every step.
Tolerance: 1e-6 relative. pyai does Keras's float32 operations in Keras's order (alpha included,
computed in float32 as Keras does), so each step matches to an ulp or so and 5 steps stay ~1e-7
off. The change of param over the steps is compared too, with 1e-5: it is the difference of two
float32 values of size ~1, so an ulp of param (1e-7) is ~1e-5 of a change of ~1e-2; a learning
rate, bias correction or epsilon used wrongly shows up there at 1e-3 or more.
"""

import numpy as np
import pytest

from conftest import assert_close, require, skip_in_cuda_simulator
from pyai import ops
from pyai.kernels.common import adam_step_size
from pyai.kernels.numba_cpu import adam, sgd

# TensorFlow is the reference; a machine without it (the GPU machine) uses tests/golden
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

TOL = 1e-6
CHANGE_TOL = 1e-5
STEPS = 5
SHAPES = [(1,), (7, 13), (3, 5, 17), (1_000_003,)]
ADAM_SETTINGS = [
    {"lr": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},    # Keras's defaults
    {"lr": 0.05, "beta_1": 0.5, "beta_2": 0.8, "epsilon": 1e-3},
]


def gradients(rng, shape):
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(STEPS)]


def keras_variable(optimizer, suffix):
    (variable,) = [v for v in optimizer.variables if v.path.endswith(suffix)]
    return variable.numpy()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("lr", [0.01, 0.5])
def test_sgd_matches_keras(backend, rng, shape, lr):
    require("sgd_update", backend)
    start = rng.standard_normal(shape).astype(np.float32)
    param, variable = start.copy(), tf.Variable(start)
    optimizer = keras.optimizers.SGD(learning_rate=lr)
    for step, grad in enumerate(gradients(rng, shape), 1):
        assert ops.sgd_update(param, grad, lr=lr) is None
        optimizer.apply_gradients([(tf.constant(grad), variable)])
        where = f"{backend} sgd lr={lr}, shape {shape}, step {step}"
        assert_close(f"{where}: param", param, variable.numpy(), TOL)
    assert_close(f"{where}: param - start", param - start, variable.numpy() - start, CHANGE_TOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("settings", ADAM_SETTINGS, ids=["defaults", "large_steps"])
def test_adam_matches_keras(backend, rng, shape, settings):
    require("adam_update", backend)
    if np.prod(shape) > 10_000:
        skip_in_cuda_simulator(backend, f"shape {shape}")
    start = rng.standard_normal(shape).astype(np.float32)
    param, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
    variable = tf.Variable(start)
    optimizer = keras.optimizers.Adam(learning_rate=settings["lr"], beta_1=settings["beta_1"],
                                      beta_2=settings["beta_2"], epsilon=settings["epsilon"])
    for step, grad in enumerate(gradients(rng, shape), 1):
        assert ops.adam_update(param, grad, m, v, step=step, **settings) is None
        optimizer.apply_gradients([(tf.constant(grad), variable)])
        where = f"{backend} adam {settings}, shape {shape}, step {step}"
        assert_close(f"{where}: param", param, variable.numpy(), TOL)
        assert_close(f"{where}: m", m, keras_variable(optimizer, "_momentum"), TOL)
        assert_close(f"{where}: v", v, keras_variable(optimizer, "_velocity"), TOL)
    assert_close(f"{where}: param - start", param - start, variable.numpy() - start, CHANGE_TOL)


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_adam_step_size_is_keras_float32_expression(step):
    """alpha as Keras's update_step computes it, in float32. (In float64 it differs: 1 - 0.999 is
    1e-3 there but 1 - float32(0.999) is 1.3e-5 relatively smaller, so alpha moves by 6e-6.)"""
    f32 = tf.float32
    power = lambda beta: tf.pow(tf.constant(beta, f32), tf.constant(step, f32))
    keras_alpha = tf.constant(0.001, f32) * tf.sqrt(1 - power(0.999)) / (1 - power(0.9))
    alpha = adam_step_size(0.001, 0.9, 0.999, step)
    assert alpha.dtype == np.float32
    assert alpha == keras_alpha.numpy(), f"step {step}: {alpha!r}, Keras {keras_alpha.numpy()!r}"


def test_sgd_matches_numpy_reference(backend, rng):
    require("sgd_update", backend)
    param, grad = (rng.standard_normal(1000).astype(np.float32) for _ in range(2))
    expected = param.copy()
    ops.sgd_update(param, grad, lr=0.1)
    sgd.sgd_update_reference(expected, grad, 0.1)
    assert_close(f"{backend} sgd vs numpy reference: param", param, expected, TOL)


def test_adam_matches_numpy_reference(backend, rng):
    require("adam_update", backend)
    param, grad, m = (rng.standard_normal(1000).astype(np.float32) for _ in range(3))
    v = rng.uniform(0, 0.1, 1000).astype(np.float32)
    expected = {"param": param.copy(), "m": m.copy(), "v": v.copy()}
    ops.adam_update(param, grad, m, v, step=3, lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    adam.adam_update_reference(expected["param"], grad, expected["m"], expected["v"],
                               0.01, 0.9, 0.999, 1e-7, 3)
    for name, out in (("param", param), ("m", m), ("v", v)):
        assert_close(f"{backend} adam vs numpy reference: {name}", out, expected[name], TOL)


def test_sgd_accepts_float64_and_non_contiguous_grad(backend, rng):
    require("sgd_update", backend)
    start = rng.standard_normal((6, 10)).astype(np.float32)
    grad = rng.standard_normal((10, 6)).T                    # float64, transposed
    param, expected = start.copy(), start.copy()
    ops.sgd_update(param, grad, lr=0.1)
    ops.sgd_update(expected, np.ascontiguousarray(grad, np.float32), lr=0.1)
    np.testing.assert_array_equal(param, expected)
    assert not np.array_equal(param, start)


def test_adam_accepts_float64_and_non_contiguous_grad(backend, rng):
    require("adam_update", backend)
    start = rng.standard_normal((6, 10)).astype(np.float32)
    grad = rng.standard_normal((10, 6)).T
    results = []
    for g in (grad, np.ascontiguousarray(grad, np.float32)):
        param, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
        ops.adam_update(param, g, m, v, step=1, lr=0.1)
        results.append((param, m, v))
    for out, expected in zip(*results):
        np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(results[0][0], start)


def bad_in_place_arrays(rng):
    """Arrays that cannot be updated in place: each would need a silent copy."""
    return {"float64": rng.standard_normal((6, 10)),
            "non-contiguous": rng.standard_normal((10, 6)).astype(np.float32).T,
            "list": [[0.5] * 10] * 6}


@pytest.mark.parametrize("kind", ["float64", "non-contiguous", "list"])
def test_sgd_rejects_param_it_cannot_update_in_place(backend, rng, kind):
    require("sgd_update", backend)
    param = bad_in_place_arrays(rng)[kind]
    with pytest.raises(TypeError, match="^param: .*in place"):
        ops.sgd_update(param, np.ones((6, 10), np.float32), lr=0.1)


@pytest.mark.parametrize("name", ["param", "m", "v"])
@pytest.mark.parametrize("kind", ["float64", "non-contiguous", "list"])
def test_adam_rejects_arrays_it_cannot_update_in_place(backend, rng, name, kind):
    require("adam_update", backend)
    arrays = {n: np.zeros((6, 10), np.float32) for n in ("param", "m", "v")}
    arrays[name] = bad_in_place_arrays(rng)[kind]
    with pytest.raises(TypeError, match=f"^{name}: .*in place"):
        ops.adam_update(arrays["param"], np.ones((6, 10), np.float32), arrays["m"], arrays["v"],
                        step=1)


@pytest.mark.parametrize("name", ["grad", "m", "v"])
def test_adam_rejects_mismatched_shapes(backend, name):
    require("adam_update", backend)
    arrays = {n: np.zeros((6, 10), np.float32) for n in ("grad", "m", "v")}
    arrays[name] = np.zeros((10, 6), np.float32)
    with pytest.raises(ValueError, match=rf"^{name}: .*shape of param \(6, 10\)"):
        ops.adam_update(np.zeros((6, 10), np.float32), arrays["grad"], arrays["m"], arrays["v"],
                        step=1)


def test_sgd_rejects_mismatched_shapes(backend):
    require("sgd_update", backend)
    with pytest.raises(ValueError, match=r"^grad: .*shape of param \(6, 10\)"):
        ops.sgd_update(np.zeros((6, 10), np.float32), np.zeros((10, 6), np.float32), lr=0.1)


@pytest.mark.parametrize("step", [0, -1, 1.0, True, None])
def test_adam_rejects_a_step_that_is_not_a_positive_integer(backend, step):
    require("adam_update", backend)
    param, grad = np.zeros(4, np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="^step: "):
        ops.adam_update(param, grad, np.zeros_like(param), np.zeros_like(param), step=step)
    np.testing.assert_array_equal(param, 0)


def test_rejects_complex_grad(backend):
    require("sgd_update", backend)
    with pytest.raises(TypeError, match="^grad: .*complex"):
        ops.sgd_update(np.zeros(4, np.float32), np.ones(4, np.complex64), lr=0.1)
