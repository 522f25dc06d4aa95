"""A Dense layer's weight and bias gradient and its Adam step in one pass (numba-cpu
dense_adam_update, and pyai.optim.Adam.backward_and_step, which uses it) against the two passes it
replaces: the same floats bit for bit (np.array_equal), step after step. The two passes match
Keras (test_optimizers.py, test_matmul.py, test_gan.py's twenty steps); here the pass is also held
to a float64 reference, so that both cannot be wrong together.
"""

import numpy as np
import pytest

from pyai import dispatch, ops
from pyai.kernels.numba_cpu import adam, matmul
from pyai.kernels.numba_cpu.dense_adam import DEEPEST, dense_adam_reference, dense_adam_update
from pyai.kernels.numba_cpu.matmul_micro import MR, NR
from pyai.nn import Dense, FlatParameters, LayerNorm, LeakyReLU, Sequential
from pyai.optim import Adam

SETTINGS = (2e-4, 0.5, 0.999, 1e-7)   # lr, beta_1, beta_2, epsilon: the GAN's
# (batch, in, out): 1s; primes; in a multiple of MR (the row of ones a sliver of its own); out
# not a multiple of NR; one output (the product's gemv); a batch of one (its outer product); a
# batch past KC (two parts of the tiles' depth) and past DEEPEST (the two passes); few rows and
# many columns, cut into column parts on 2 threads (the last ragged); the GAN's and DCGAN's
SHAPES = [(1, 1, 1), (7, 13, 1), (1, 12, 33), (5, MR, NR + 1), (13, 2 * MR - 1, 3 * NR - 5), (300, 23, 65),
          (DEEPEST + 1, 24, 70), (200, 60, 1000), (64, 100, 256), (128, 784, 512), (64, 1024, 784),
          (64, 100, 6272)]


def layer_state(rng, inputs, outputs):
    size = (inputs + 1) * outputs
    return [rng.standard_normal(size).astype(np.float32), rng.standard_normal(size).astype(np.float32) * 0.1,
            rng.uniform(0.01, 1.0, size).astype(np.float32)]   # param, m, v


@pytest.mark.parametrize("batch, inputs, outputs", SHAPES)
def test_one_pass_gives_the_floats_of_the_gradient_then_adam(rng, batch, inputs, outputs):
    x = rng.standard_normal((batch, inputs)).astype(np.float32)
    dy = rng.standard_normal((batch, outputs)).astype(np.float32)
    fused, apart = layer_state(rng, inputs, outputs), None
    apart = [array.copy() for array in fused]
    grad_fused, grad_apart = (np.full((inputs + 1) * outputs, np.nan, np.float32) for _ in range(2))
    for step in (1, 2, 3):
        dense_adam_update(x, dy, grad_fused, *fused, *SETTINGS, step)
        matmul.weight_and_bias_grad(x, dy, out=grad_apart.reshape(inputs + 1, outputs))
        adam.adam_update(apart[0], grad_apart, apart[1], apart[2], *SETTINGS, step)
        assert np.array_equal(grad_fused, grad_apart)
        for got, expected in zip(fused, apart):
            assert np.array_equal(got, expected)
        x = rng.standard_normal((batch, inputs)).astype(np.float32)


@pytest.mark.parametrize("batch, inputs, outputs", SHAPES[:8])
def test_the_stand_in_gives_the_one_pass_floats(rng, batch, inputs, outputs):
    """plain_dense_adam.py, which steps while a worker compiles this file on a first run, gives
    its floats bit for bit, step after step."""
    from pyai.kernels.numba_cpu import plain_dense_adam
    x = rng.standard_normal((batch, inputs)).astype(np.float32)
    dy = rng.standard_normal((batch, outputs)).astype(np.float32)
    fused = layer_state(rng, inputs, outputs)
    plain = [array.copy() for array in fused]
    grad_fused, grad_plain = (np.full((inputs + 1) * outputs, np.nan, np.float32) for _ in range(2))
    for step in (1, 2):
        dense_adam_update(x, dy, grad_fused, *fused, *SETTINGS, step)
        plain_dense_adam.dense_adam_update(x, dy, grad_plain, *plain, *SETTINGS, step)
        assert np.array_equal(grad_fused, grad_plain) and not np.isnan(grad_plain).any()
        for got, expected in zip(plain, fused):
            assert np.array_equal(got, expected)
        dy = rng.standard_normal((batch, outputs)).astype(np.float32)


@pytest.mark.parametrize("batch, inputs, outputs", [(1, 1, 1), (13, 2 * MR - 1, 3 * NR - 5), (64, 100, 256)])
def test_one_pass_matches_float64(rng, batch, inputs, outputs):
    x = rng.standard_normal((batch, inputs)).astype(np.float32)
    dy = rng.standard_normal((batch, outputs)).astype(np.float32)
    state = layer_state(rng, inputs, outputs)
    before = [array.copy() for array in state]
    grad = np.empty((inputs + 1) * outputs, np.float32)
    dense_adam_update(x, dy, grad, *state, *SETTINGS, 1)
    expected = np.concatenate([x.T.astype(np.float64) @ dy, dy.sum(axis=0, keepdims=True, dtype=np.float64)]).ravel()
    assert np.linalg.norm(grad - expected) <= 1e-5 * np.linalg.norm(expected)
    reference = [array.astype(np.float64) for array in before]
    dense_adam_reference(x.astype(np.float64), dy.astype(np.float64), *reference, *SETTINGS, 1)
    for got, want, old in zip(state, reference, before):
        assert np.all(np.isfinite(got))
        assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want - old) + 1e-6 * np.linalg.norm(want)


def network(rng, with_layer_norm):
    layers = [Dense(11, 37, "leaky_relu", rng=rng), *([LayerNorm(37)] if with_layer_norm else []),
              Dense(37, 13, rng=rng), LeakyReLU(0.1), Dense(13, 1, "tanh", rng=rng)]
    model = Sequential(*layers)
    model.flat = FlatParameters(model)
    return model


@pytest.mark.parametrize("with_layer_norm", [False, True])
@pytest.mark.parametrize("input_gradient", [True, False])
def test_backward_and_step_equals_backward_then_step(rng, with_layer_norm, input_gradient):
    """Dense layers stepped during backward, a LayerNorm's parameters by the pass after it."""
    assert dispatch.implements("dense_adam_update")   # so backward_and_step takes the one pass
    seed = int(rng.integers(1 << 32))
    fused, apart = (network(np.random.default_rng(seed), with_layer_norm) for _ in range(2))
    fused_adam, apart_adam = Adam(*SETTINGS), Adam(*SETTINGS)
    for _ in range(3):
        x = rng.standard_normal((9, 11)).astype(np.float32)
        dy = rng.standard_normal((9, 1)).astype(np.float32)
        fused.forward(x)
        apart.forward(x)
        dx = fused_adam.backward_and_step(fused, dy, input_gradient=input_gradient)
        dx_apart = apart.backward(dy, input_gradient=input_gradient)
        apart_adam.step(apart)
        assert (dx is None) == (not input_gradient) and (dx is None or np.array_equal(dx, dx_apart))
        for name in ("parameters", "gradients"):
            assert np.array_equal(getattr(fused.flat, name), getattr(apart.flat, name))
        for got, expected in zip(fused_adam.flat_moments(fused.flat), apart_adam.flat_moments(apart.flat)):
            assert np.array_equal(got, expected)
    assert fused_adam.steps == apart_adam.steps == 3
    assert all(layer.fused_update is None for layer in fused.layers if isinstance(layer, Dense))


def assert_one_pass_equals_two(fused, fused_adam, apart, apart_adam, x, dy):
    """forward x through both twins, then backward_and_step on one and backward, step on the
    other: their flat parameters and gradients bit for bit the same."""
    fused.forward(x)
    apart.forward(x)
    fused_adam.backward_and_step(fused, dy)
    apart.backward(dy)
    apart_adam.step(apart)
    assert np.array_equal(fused.flat.parameters, apart.flat.parameters)
    assert np.array_equal(fused.flat.gradients, apart.flat.gradients)


def test_a_dense_layer_whose_input_the_kernel_cannot_take_is_stepped_with_the_rest(rng):
    """x, a view of every other column, is not C-contiguous: that layer's gradient is made by
    the product alone and stepped by the pass over the parameters left, with the same floats."""
    seed = int(rng.integers(1 << 32))
    fused, apart = (network(np.random.default_rng(seed), False) for _ in range(2))
    before = fused.flat.parameters.copy()
    fused_adam, apart_adam = Adam(*SETTINGS), Adam(*SETTINGS)
    x = rng.standard_normal((9, 22)).astype(np.float32)[:, ::2]
    dy = rng.standard_normal((9, 1)).astype(np.float32)
    assert_one_pass_equals_two(fused, fused_adam, apart, apart_adam, x, dy)
    assert np.all(fused.flat.parameters[fused.flat.offsets[0][0]:fused.flat.offsets[1][1]]
                  != before[fused.flat.offsets[0][0]:fused.flat.offsets[1][1]])


def test_the_fused_plan_follows_the_model_and_its_buffer(rng):
    """Adam works out which runs it steps during backward once for a model and its flat buffer
    (fused_plan): steps whose inputs the kernel takes, then not (a strided x: that layer stepped
    with the rest), then a buffer made anew, all equal backward then step; a layer swapped in
    without a new buffer is refused, not stepped as the old one."""
    seed = int(rng.integers(1 << 32))
    fused, apart = (network(np.random.default_rng(seed), False) for _ in range(2))
    fused_adam, apart_adam = Adam(*SETTINGS), Adam(*SETTINGS)
    for step in range(5):
        if step == 3:
            fused.flat = FlatParameters(fused)
            apart.flat = FlatParameters(apart)
        x = rng.standard_normal((9, 22)).astype(np.float32)
        x = x[:, ::2] if step in (1, 2) else np.ascontiguousarray(x[:, :11])
        dy = rng.standard_normal((9, 1)).astype(np.float32)
        assert_one_pass_equals_two(fused, fused_adam, apart, apart_adam, x, dy)
    assert fused_adam.plan[1] is fused.flat
    fused.layers[0] = Dense(11, 37, "leaky_relu", rng=rng)
    fused.forward(rng.standard_normal((4, 11)).astype(np.float32))
    with pytest.raises(RuntimeError, match="'0.weight' was replaced by an array outside the model's flat buffer"):
        fused_adam.backward_and_step(fused, rng.standard_normal((4, 1)).astype(np.float32))


def test_a_backward_that_fails_takes_no_step(rng):
    """dy of the wrong shape: the error is the layer's, before any parameter or the step count
    changes."""
    model = network(rng, False)
    optimizer = Adam(*SETTINGS)
    model.forward(rng.standard_normal((4, 11)).astype(np.float32))
    before = model.flat.parameters.copy()
    with pytest.raises(ValueError, match="dy must have the forward output's shape"):
        optimizer.backward_and_step(model, rng.standard_normal((4, 2)).astype(np.float32))
    assert optimizer.steps == 0 and np.array_equal(model.flat.parameters, before)
    assert all(layer.fused_update is None for layer in model.layers if isinstance(layer, Dense))


def test_the_op_gives_the_kernels_floats_and_refuses_bad_input(rng):
    x = rng.standard_normal((6, 7)).astype(np.float32)
    dy = rng.standard_normal((6, 3)).astype(np.float32)
    grad, param, m, v = (rng.uniform(0.1, 1.0, (8, 3)).astype(np.float32) for _ in range(4))
    flat = [array.ravel().copy() for array in (param, m, v)]
    flat_grad = np.empty(24, np.float32)
    ops.dense_adam_update(x, dy, grad, param, m, v, step=2, lr=SETTINGS[0], beta_1=SETTINGS[1], beta_2=SETTINGS[2],
                          epsilon=SETTINGS[3])
    dense_adam_update(x, dy, flat_grad, *flat, *SETTINGS, 2)
    assert np.array_equal(grad.ravel(), flat_grad)
    assert all(np.array_equal(a.ravel(), b) for a, b in zip((param, m, v), flat))
    good = {"grad": grad, "param": param, "m": m, "v": v}
    for change, message in [({"grad": np.zeros((7, 3), np.float32)}, r"grad: expected shape \(8, 3\)"),
                            ({"v": m}, "v: shares memory with m|m: shares memory with v"),
                            ({"param": param.astype(np.float64)}, "param"),
                            ({"m": np.zeros((3, 8), np.float32).T}, "m")]:
        with pytest.raises((ValueError, TypeError), match=message):
            ops.dense_adam_update(x, dy, **{**good, **change}, step=1)
    with pytest.raises(ValueError, match="dy: expected 6 rows"):
        ops.dense_adam_update(x, dy[:5], **good, step=1)
    with pytest.raises(ValueError, match="step: expected an integer >= 1"):
        ops.dense_adam_update(x, dy, **good, step=0)
    with pytest.raises(ValueError, match="beta_1, beta_2: must be below 1"):
        ops.dense_adam_update(x, dy, **good, step=1, beta_2=1.0)
