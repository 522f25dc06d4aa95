"""pyai.nn layers against Keras: forward outputs and every gradient, under tf.GradientTape.

Tolerance: 1e-5 relative (||out - ref|| / ||ref||). Both sides compute in float32 and sum at most
a few dozen products per element, so the rounding differences are ~1e-7; 1e-5 leaves room for
the order of summation and for exp/tanh implementations, and still catches any wrong formula.
"""

import numpy as np
import pytest

from conftest import assert_close, require
from pyai import dispatch, ops
from pyai.nn import Dense, LeakyReLU, ReLU, Sequential, Sigmoid, Tanh

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

TOLERANCE = 1e-5
ACTIVATIONS = list(ops.ACTIVATIONS)
LAYER_OPS = ["linear", "matmul", "leaky_relu_grad", "relu_grad", "sigmoid_grad", "tanh_grad"]
GELU_OPS = ["gelu", "gelu_grad"]   # Dense with gelu calls them beside ops.linear


def keras_activation(name, alpha):
    if name == "leaky_relu":
        return lambda x: tf.nn.leaky_relu(x, alpha)
    if name == "gelu":   # pyai's gelu is the tanh approximation
        return lambda x: keras.activations.gelu(x, approximate=True)
    return name


def keras_dense(dense):
    """A Keras Dense layer computing the same function as `dense`, with its weights copied."""
    layer = keras.layers.Dense(dense.out_features, activation=keras_activation(dense.activation, dense.alpha))
    layer.build((None, dense.in_features))
    layer.set_weights([dense.weight, dense.bias])
    return layer


def keras_forward_backward(function, variables, x, dy):
    """function(x) and the gradients of sum(y * dy) with respect to x and `variables`."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x)
    gradients = tape.gradient(y, [x, *variables], output_gradients=tf.constant(dy))
    return y.numpy(), [gradient.numpy() for gradient in gradients]


def random_dense(rng, in_features, out_features, activation, alpha=0.2):
    dense = Dense(in_features, out_features, activation=activation, alpha=alpha, rng=rng)
    dense.bias[...] = rng.normal(0, 0.5, out_features)   # Keras starts at zero; test the bias path too
    return dense


def require_all(ops, backend):
    for op in ops:
        require(op, backend)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize("in_features, out_features", [(13, 5), (64, 33)])
def test_dense_matches_keras(backend, rng, activation, batch, in_features, out_features):
    require_all(LAYER_OPS + (GELU_OPS if activation == "gelu" else []), backend)
    alpha = 0.3
    dense = random_dense(rng, in_features, out_features, activation, alpha)
    x = rng.normal(size=(batch, in_features)).astype(np.float32)
    dy = rng.normal(size=(batch, out_features)).astype(np.float32)
    layer = keras_dense(dense)

    y = dense.forward(x)
    dx = dense.backward(dy)
    y_ref, (dx_ref, dw_ref, db_ref) = keras_forward_backward(layer, [layer.kernel, layer.bias], x, dy)

    where = f"{backend}, {activation}, x {x.shape}"
    assert_close(f"y ({where})", y, y_ref, TOLERANCE)
    assert_close(f"dx ({where})", dx, dx_ref, TOLERANCE)
    assert_close(f"grad_weight ({where})", dense.grad_weight, dw_ref, TOLERANCE)
    assert_close(f"grad_bias ({where})", dense.grad_bias, db_ref, TOLERANCE)


def test_dense_starts_glorot_uniform_with_zero_bias():
    dense = Dense(300, 200, rng=np.random.default_rng(0))
    limit = np.sqrt(6 / (300 + 200))
    assert dense.weight.dtype == np.float32 and dense.weight.shape == (300, 200)
    assert np.all(np.abs(dense.weight) <= limit)
    # a uniform draw on [-limit, limit] has variance limit^2 / 3; 60000 draws pin it within 2%
    assert abs(dense.weight.var() / (limit**2 / 3) - 1) < 0.02
    assert np.array_equal(dense.bias, np.zeros(200, np.float32))


def test_dense_exposes_parameters_and_their_gradients(backend, rng):
    require_all(LAYER_OPS, backend)
    dense = random_dense(rng, 6, 4, "tanh")
    assert [name for name, _ in dense.parameters()] == ["weight", "bias"]
    assert dense.gradients() == [("weight", None), ("bias", None)]
    dense.backward(dense.forward(rng.normal(size=(3, 6))))
    for (name, parameter), (grad_name, grad) in zip(dense.parameters(), dense.gradients()):
        assert grad_name == name and grad.shape == parameter.shape and grad.dtype == np.float32


ACTIVATION_LAYERS = [
    (lambda: LeakyReLU(0.1), lambda x: tf.nn.leaky_relu(x, 0.1), ["leaky_relu", "leaky_relu_grad"]),
    (ReLU, tf.nn.relu, ["relu", "relu_grad"]),
    (Sigmoid, tf.sigmoid, ["sigmoid", "sigmoid_grad"]),
    (Tanh, tf.tanh, ["tanh", "tanh_grad"]),
]


@pytest.mark.parametrize("make_layer, reference, ops", ACTIVATION_LAYERS,
                         ids=["leaky_relu", "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(1,), (7, 13), (2, 3, 5)])
def test_activation_layer_matches_tensorflow(backend, rng, make_layer, reference, ops, shape):
    require_all(ops, backend)
    layer = make_layer()
    x = (3 * rng.normal(size=shape)).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)

    y = layer.forward(x)
    dx = layer.backward(dy)
    y_ref, (dx_ref,) = keras_forward_backward(reference, [], x, dy)

    assert_close(f"{layer!r} y ({backend}, {shape})", y, y_ref, TOLERANCE)
    # dx = dy * f'(x), with f' computed from float32 y: where tanh or sigmoid saturate, 1 - y^2
    # loses digits to one ulp of y in both pyai and TensorFlow, so its *relative* error is
    # unbounded while its error scaled by dy stays below a few ulp. Hence the norm of dy here.
    dx_error = np.linalg.norm(dx - dx_ref) / np.linalg.norm(dy)
    assert np.all(np.isfinite(dx)) and dx_error <= 1e-6, f"{layer!r} dx ({backend}, {shape}): {dx_error:.2e}"
    assert layer.parameters() == [] and layer.gradients() == []


def test_sequential_matches_keras(backend, rng):
    require_all(LAYER_OPS + ["leaky_relu"], backend)
    first, last = random_dense(rng, 11, 9, None), random_dense(rng, 9, 3, "sigmoid")
    model = Sequential(first, LeakyReLU(0.2), last)
    reference = keras.Sequential([keras_dense(first), keras.layers.LeakyReLU(negative_slope=0.2),
                                  keras_dense(last)])
    x = rng.normal(size=(7, 11)).astype(np.float32)
    dy = rng.normal(size=(7, 3)).astype(np.float32)

    y = model.forward(x)
    dx = model.backward(dy)
    y_ref, (dx_ref, *grads_ref) = keras_forward_backward(reference, reference.trainable_weights, x, dy)

    assert_close(f"y ({backend})", y, y_ref, TOLERANCE)
    assert_close(f"dx ({backend})", dx, dx_ref, TOLERANCE)
    assert [name for name, _ in model.gradients()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for (name, grad), grad_ref in zip(model.gradients(), grads_ref, strict=True):
        assert_close(f"{name} ({backend})", grad, grad_ref, TOLERANCE)


def test_backward_without_input_gradient_gives_the_same_parameter_gradients(rng):
    model = Sequential(random_dense(rng, 11, 9, "leaky_relu"), random_dense(rng, 9, 3, None))
    x = rng.normal(size=(7, 11)).astype(np.float32)
    dy = rng.normal(size=(7, 3)).astype(np.float32)
    model.forward(x)
    assert model.backward(dy) is not None
    full = [grad.copy() for _, grad in model.gradients()]
    model.forward(x)
    assert model.backward(dy, input_gradient=False) is None
    for (name, grad), expected in zip(model.gradients(), full, strict=True):
        np.testing.assert_array_equal(grad, expected, err_msg=name)


def test_backward_without_input_gradient_skips_the_first_convolutions_dx(rng, monkeypatch):
    """A discriminator's first Conv2D behind a Reshape: no dx wanted, none computed, the same
    parameter gradients."""
    from pyai.nn import Conv2D, Flatten, Reshape
    model = Sequential(Reshape((6, 5, 2)), Conv2D(2, 16, 3, 2, activation="leaky_relu", rng=rng),
                       Flatten(), random_dense(rng, 3 * 3 * 16, 2, None))
    x = rng.normal(size=(4, 60)).astype(np.float32)
    dy = rng.normal(size=(4, 2)).astype(np.float32)
    model.forward(x)
    assert model.backward(dy).shape == x.shape
    full = [grad.copy() for _, grad in model.gradients()]
    calls = []   # input_gradient of each gradient call: through the op, or (numba-cpu) its kernel itself
    conv2d_grad, implementation = ops.conv2d_grad, dispatch.implementation
    monkeypatch.setattr(ops, "conv2d_grad", lambda *args, **kwargs: calls.append(kwargs.get("input_gradient", True))
                        or conv2d_grad(*args, **kwargs))

    def spied(op, *args):
        kernel = implementation(op, *args)
        return kernel if op != "conv2d_grad" else lambda *operands: calls.append(operands[5]) or kernel(*operands)
    monkeypatch.setattr(dispatch, "implementation", spied)
    model.forward(x)
    assert model.backward(dy, input_gradient=False) is None
    assert calls == [False]
    for (name, grad), expected in zip(model.gradients(), full, strict=True):
        np.testing.assert_array_equal(grad, expected, err_msg=name)


def row_wise_models(rng):
    """Sequentials of every row-wise layer: Dense with each fused activation and the activation
    layers; a DCGAN-like stack of Reshape, Conv2DTranspose, Conv2D and Flatten."""
    from pyai.nn import Conv2D, Conv2DTranspose, Flatten, Reshape
    dense = Sequential(random_dense(rng, 7, 9, "leaky_relu"), random_dense(rng, 9, 8, "gelu"), LeakyReLU(0.1),
                       random_dense(rng, 8, 6, "tanh"), ReLU(), random_dense(rng, 6, 5, "sigmoid"), Tanh(),
                       random_dense(rng, 5, 4, None), Sigmoid())
    conv = Sequential(random_dense(rng, 7, 3 * 4 * 5, "leaky_relu"), Reshape((3, 4, 5)),
                      Conv2DTranspose(5, 4, 4, 2, "same", "leaky_relu", rng=rng),
                      Conv2D(4, 2, 3, 1, "same", "tanh", rng=rng), Flatten())
    return {"dense": dense, "conv": conv}


@pytest.mark.parametrize("model", ["dense", "conv"])
def test_keep_rows_makes_backward_that_of_a_forward_of_those_rows_alone(model):
    """forward of two batches, keep_rows(len of the first), backward: dx and every gradient are
    the floats of forward and backward of the second batch alone (one generator forward for a
    GAN's two batches, pyai.models.gan)."""
    two, alone = (row_wise_models(np.random.default_rng(5))[model] for _ in range(2))
    rng = np.random.default_rng(6)
    first, second = rng.normal(size=(3, 7)).astype(np.float32), rng.normal(size=(4, 7)).astype(np.float32)
    assert two.row_wise()
    both = two.forward(np.concatenate([first, second]))
    two.keep_rows(len(first))
    expected = alone.forward(second)
    np.testing.assert_array_equal(both[len(first):], expected)
    dy = rng.normal(size=expected.shape).astype(np.float32)
    np.testing.assert_array_equal(two.backward(dy), alone.backward(dy))
    for (name, grad), (_, expected_grad) in zip(two.gradients(), alone.gradients(), strict=True):
        np.testing.assert_array_equal(grad, expected_grad, err_msg=name)


@pytest.mark.parametrize("start", [-1, 8, 1.5, True, "2", None])
def test_keep_rows_rejects_a_start_that_is_not_a_row_of_the_batch(start):
    """start must be an integer from 0 to the examples forward saw (7 here); a bad one changes
    nothing."""
    model = row_wise_models(np.random.default_rng(5))["conv"]
    model.forward(np.ones((7, 7), np.float32))
    saved = [layer.input_shape if hasattr(layer, "input_shape") else layer.x for layer in model.layers]
    with pytest.raises(ValueError, match="start: expected an integer >= 0"):
        model.keep_rows(start)
    for layer, before in zip(model.layers, saved, strict=True):
        assert (layer.input_shape if hasattr(layer, "input_shape") else layer.x) is before


def test_keep_rows_of_all_or_none_of_the_batch():
    model = row_wise_models(np.random.default_rng(5))["dense"]
    model.forward(np.ones((7, 7), np.float32))
    def rows():
        return {len(getattr(layer, attribute)) for layer in model.layers for attribute in layer.SAVED_ROWS
                if getattr(layer, attribute) is not None}
    model.keep_rows(0)
    assert rows() == {7}
    model.keep_rows(7)
    assert rows() == {0}


def test_keep_rows_is_refused_by_a_layer_not_known_to_be_row_wise():
    from pyai.nn import LayerNorm
    model = Sequential(Dense(4, 3, rng=np.random.default_rng(0)), LayerNorm(3))
    assert Dense(2, 2).row_wise() and not LayerNorm(3).row_wise() and not model.row_wise()
    model.forward(np.ones((2, 4), np.float32))
    with pytest.raises(NotImplementedError, match="not row-wise"):
        model.keep_rows(1)


def test_parameters_are_the_layers_own_arrays():
    dense = Dense(4, 2, rng=np.random.default_rng(0))
    model = Sequential(dense, ReLU())
    assert dict(model.parameters())["0.weight"] is dense.weight


@pytest.mark.parametrize("shape", [(7, 5), (7,), (2, 7, 6)])
def test_dense_rejects_the_wrong_input_shape(shape):
    dense = Dense(6, 3, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"Dense\(6, 3.*\(batch, 6\)"):
        dense.forward(np.ones(shape, np.float32))


def test_dense_leaves_the_dtype_check_to_the_op_which_names_x():
    dense = Dense(2, 3, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="^x: expected an array of real numbers"):
        dense.forward(np.array([["a", "b"]]))


def test_sequential_names_the_layer_that_rejects_its_input():
    model = Sequential(Dense(6, 4, rng=np.random.default_rng(0)), Dense(5, 2, rng=np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"Dense\(5, 2.*\(batch, 5\)"):
        model.forward(np.ones((3, 6), np.float32))


@pytest.mark.parametrize("layer", [Dense(3, 2), LeakyReLU(), ReLU(), Sigmoid(), Tanh(),
                                   Sequential(Dense(3, 2))], ids=repr)
def test_backward_before_forward_is_an_error(layer):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.ones((1, 2), np.float32))


def test_backward_rejects_dy_of_another_shape(backend, rng):
    require_all(LAYER_OPS, backend)
    dense = random_dense(rng, 3, 2, "relu")
    dense.forward(rng.normal(size=(4, 3)))
    with pytest.raises(ValueError, match=r"dy must have the forward output's shape \(4, 2\)"):
        dense.backward(np.ones((4, 3), np.float32))


def test_dense_rejects_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        Dense(3, 2, activation="softmax")
    with pytest.raises(ValueError, match="out_features"):
        Dense(3, 0)
    with pytest.raises(ValueError, match="alpha"):
        Dense(3, 2, activation="leaky_relu", alpha=-0.1)
    with pytest.raises(ValueError, match="at least one layer"):
        Sequential()


@pytest.mark.parametrize("activation", ["leaky_relu", "gelu", None])
def test_dense_on_numba_cpu_calls_the_kernels_itself_with_the_same_floats(rng, monkeypatch, activation):
    """Dense checks its shapes, so on numba-cpu its products skip the ops' checks: the same kernels,
    the same floats as through pyai.ops, with ops.linear and ops.matmul never called."""
    from pyai import use_backend
    from pyai.nn import layers
    dense = random_dense(rng, 13, 17, activation, alpha=0.3)
    x = rng.normal(size=(7, 13)).astype(np.float32)
    dy = rng.normal(size=(7, 17)).astype(np.float32)
    with use_backend("numba-cpu"):
        y, pre = layers.linear_forward(x, dense.weight, dense.bias, activation, 0.3)
        expected = (y, *layers.linear_backward(dy, x, dense.weight, y, pre, activation, 0.3))

        def refuse(*args, **kwargs):
            raise AssertionError("an op's checks ran")
        monkeypatch.setattr(ops, "linear", refuse)
        monkeypatch.setattr(ops, "matmul", refuse)
        got = (dense.forward(x), dense.backward(dy), dense.grad_weight, dense.grad_bias)
    for name, out, reference in zip(["y", "dx", "dweight", "dbias"], got, expected, strict=True):
        np.testing.assert_array_equal(out, reference, err_msg=name)


def unfused_backward(layers, dy, input_gradient=True):
    """Sequential.backward of Dense layers by the ops, one step at a time: each activation
    gradient its own op, each product a plain ops.matmul."""
    gradients = []
    for i, layer in reversed(list(enumerate(layers))):
        dpre = ops.leaky_relu_grad(dy, layer.y, layer.alpha) if layer.activation == "leaky_relu" else dy
        gradients[:0] = [ops.matmul(layer.x, dpre, transpose_a=True), dpre.sum(axis=0, dtype=np.float32)]
        dy = ops.matmul(dpre, layer.weight, transpose_b=True) if input_gradient or i else None
    return dy, gradients


def refusing(refused, implementation):
    def checked(op, *args, **kwargs):
        assert op != refused, f"{op} ran"
        return implementation(op, *args, **kwargs)
    return checked


def backward_both_ways(monkeypatch, model, dy, refuse, input_gradient=True):
    """(model.backward(dy), the GAN's backward_to_input(model, dy)); where `refuse`, an op
    leaky_relu_grad of its own fails."""
    from pyai.models.gan import backward_to_input
    with monkeypatch.context() as patch:
        if refuse:
            patch.setattr(ops, "leaky_relu_grad", None)
            patch.setattr(dispatch, "implementation", refusing("leaky_relu_grad", dispatch.implementation))
        return model.backward(dy, input_gradient=input_gradient), backward_to_input(model, dy)


@pytest.mark.parametrize("batch", [1, 7, 130])
def test_a_dense_stack_takes_its_leaky_relu_gradients_in_its_products(rng, monkeypatch, batch):
    """A Dense above a Dense with leaky ReLU hands it d loss / d its pre-activation, made in its
    input gradient's product (matmul_leaky_relu_grad): the floats of the ops one step at a time,
    bit for bit (bias gradients within rounding: summed in another order), with and without dx
    and through the GAN's backward_to_input; leaky_relu_grad never runs. A layer whose weight
    is not what the kernels take (Fortran order) goes through the ops, with the same floats."""
    layers = [random_dense(rng, 13, 29, "leaky_relu", alpha=0.3), random_dense(rng, 29, 17, "leaky_relu", alpha=0.1),
              random_dense(rng, 17, 5, None)]
    model = Sequential(*layers)
    x = rng.normal(size=(batch, 13)).astype(np.float32)
    dy = rng.normal(size=(batch, 5)).astype(np.float32)
    model.forward(x)
    expected, gradients = unfused_backward(layers, dy)
    expected_input_gradient = expected.copy()
    for input_gradient in (True, False):
        for fortran_weight in (False, True):
            if fortran_weight:
                layers[1].weight = np.asfortranarray(layers[1].weight)
            # a leaky ReLU gradient of its own fails, but where the weight sends it through the ops
            dx, through = backward_both_ways(monkeypatch, model, dy, not fortran_weight, input_gradient)
            if input_gradient:
                np.testing.assert_array_equal(dx, expected)
            else:
                assert dx is None
            np.testing.assert_array_equal(through, expected_input_gradient)
            for (name, grad), reference in zip(model.gradients(), gradients, strict=True):
                if name.endswith("weight"):
                    np.testing.assert_array_equal(grad, reference, err_msg=name)
                else:
                    assert_close(name, grad, reference, 1e-6)
            layers[1].weight = np.ascontiguousarray(layers[1].weight)


def unfused_conv_backward(layers, dy):
    """Sequential.backward of Dense, convolution and Reshape layers by the ops, one step at a
    time: (dx, the weight gradients)."""
    from pyai.nn import Reshape
    gradients = []
    for layer in reversed(layers):
        if isinstance(layer, Reshape):
            dy = layer.backward(dy)
            continue
        dpre = ops.leaky_relu_grad(dy, layer.y, layer.alpha) if layer.activation == "leaky_relu" else dy
        if isinstance(layer, Dense):
            gradients[:0] = [ops.matmul(layer.x, dpre, transpose_a=True)]
            dy = ops.matmul(dpre, layer.weight, transpose_b=True)
        else:
            dy, weight_gradient, _ = getattr(ops, layer.gradient_op)(dpre, layer.x, layer.weight, **layer.options())
            gradients[:0] = [weight_gradient]
    return dy, gradients


@pytest.mark.parametrize("channels", [16, 48])
def test_a_conv_stack_takes_its_leaky_relu_gradients_in_its_input_gradients(rng, monkeypatch, channels):
    """A convolution or Dense above a layer with leaky ReLU, through a Reshape or Flatten, hands it
    d loss / d its pre-activation, made in its own input gradient's pass: a Conv2DTranspose's (an
    implicit GEMM over dy's windows), a strided Conv2D's (the stride phases' implicit GEMMs), a
    one-channel Conv2D's (the direct kernel) and a Dense's over a flattened image. The floats of
    the ops one step at a time, bit for bit, through backward and the GAN's backward_to_input;
    leaky_relu_grad never runs. A weight in Fortran order goes through the ops, the same floats.
    48 channels: whole register tiles (32 columns with AVX-512), which take the gradient as they
    are stored, beside a ragged rest."""
    from pyai.nn import Conv2D, Conv2DTranspose, Flatten, Reshape
    layers = [random_dense(rng, 6, 4 * 4 * channels, "leaky_relu", alpha=0.3), Reshape((4, 4, channels)),
              Conv2DTranspose(channels, channels, 4, 2, "same", "leaky_relu", 0.1, rng),
              Conv2D(channels, 20, 3, 2, "same", "leaky_relu", 0.2, rng),
              Conv2D(20, 1, 3, 1, "same", "leaky_relu", 0.25, rng), Flatten(), random_dense(rng, 16, 3, None)]
    for layer in layers[2:5]:
        layer.bias[...] = rng.normal(0, 0.5, layer.bias.shape)
    model = Sequential(*layers)
    for batch in (1, 5):
        model.forward(rng.normal(size=(batch, 6)).astype(np.float32))
        dy = rng.normal(size=(batch, 3)).astype(np.float32)
        expected, gradients = unfused_conv_backward(layers, dy)
        for fortran_weight in (False, True):
            if fortran_weight:
                layers[3].weight = np.asfortranarray(layers[3].weight)
            dx, through = backward_both_ways(monkeypatch, model, dy, not fortran_weight)
            np.testing.assert_array_equal(dx, expected)
            np.testing.assert_array_equal(through, expected)
            weights = [grad for name, grad in model.gradients() if name.endswith("weight")]
            for i, (grad, reference) in enumerate(zip(weights, gradients, strict=True)):
                np.testing.assert_array_equal(grad, reference, err_msg=f"weight {i}")
            layers[3].weight = np.ascontiguousarray(layers[3].weight)


def test_dense_whose_parameters_were_replaced_goes_through_the_ops_checks(rng):
    """A weight of float64 is converted by ops.linear (same floats as float32); one of another
    shape, or an empty batch, is the op's clear error, never a kernel reading past an array."""
    dense = random_dense(rng, 5, 4, "relu")
    x = rng.normal(size=(3, 5)).astype(np.float32)
    expected = dense.forward(x)
    dense.weight = dense.weight.astype(np.float64)
    np.testing.assert_array_equal(dense.forward(x), expected)
    dense.weight = np.ones((6, 4), np.float32)
    with pytest.raises(ValueError, match=r"^w: expected 5 rows"):
        dense.forward(x)
    dense.weight = np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match=r"^x: has an empty dimension"):
        dense.forward(np.ones((0, 5), np.float32))


@pytest.mark.parametrize("transposed", [False, True])
def test_conv_layers_on_numba_cpu_call_the_kernels_themselves_with_the_same_floats(rng, monkeypatch, transposed):
    """Conv2D and Conv2DTranspose know their shapes fit, so on numba-cpu forward and backward skip
    the ops' checks: the same floats as the ops give, with the ops never called."""
    from pyai import use_backend
    from pyai.nn import Conv2D, Conv2DTranspose
    make = Conv2DTranspose if transposed else Conv2D
    layer = make(3, 16, 3, 2, padding="valid", activation="leaky_relu", alpha=0.3, rng=rng)
    layer.bias = rng.normal(size=16).astype(np.float32)
    x = rng.normal(size=(5, 7, 6, 3)).astype(np.float32)
    forward, gradient = ((ops.conv2d_transpose, ops.conv2d_transpose_grad) if transposed
                         else (ops.conv2d, ops.conv2d_grad))
    with use_backend("numba-cpu"):
        y = forward(x, layer.weight, layer.bias, stride=2, padding="valid", activation="leaky_relu", alpha=0.3)
        dy = rng.normal(size=y.shape).astype(np.float32)
        expected = (y, *gradient(ops.leaky_relu_grad(dy, y, 0.3), x, layer.weight, stride=2, padding="valid"))

        def refuse(*args, **kwargs):
            raise AssertionError("an op's checks ran")
        for name in ("conv2d", "conv2d_grad", "conv2d_transpose", "conv2d_transpose_grad"):
            monkeypatch.setattr(ops, name, refuse)
        got = (layer.forward(x), layer.backward(dy), layer.grad_weight, layer.grad_bias)
        layer.forward(x)
        assert layer.backward(dy, input_gradient=False) is None
    for name, out, reference in zip(["y", "dx", "dweight", "dbias"], got, expected, strict=True):
        np.testing.assert_array_equal(out, reference, err_msg=name)


def test_conv_layer_whose_parameters_were_replaced_goes_through_the_ops_checks(rng):
    """A weight of float64 is converted by ops.conv2d (same floats as float32); one of another
    shape, an empty batch or a 'valid' kernel larger than the image is the op's clear error,
    never a kernel reading past an array."""
    from pyai.nn import Conv2D
    conv = Conv2D(2, 16, 3, 1, padding="valid", activation="relu", rng=rng)
    x = rng.normal(size=(3, 5, 4, 2)).astype(np.float32)
    expected = conv.forward(x)
    conv.weight = conv.weight.astype(np.float64)
    np.testing.assert_array_equal(conv.forward(x), expected)
    conv.weight = np.ones((3, 3, 2, 8), np.float32)
    with pytest.raises(ValueError, match=r"^b: expected shape \(8,\)"):
        conv.forward(x)
    conv.weight = np.ones((3, 3, 2, 16), np.float32)
    with pytest.raises(ValueError, match=r"^x: has an empty dimension"):
        conv.forward(np.ones((0, 5, 4, 2), np.float32))
    with pytest.raises(ValueError, match=r"^w: a 3x3 kernel does not fit x's 2x4 images"):
        conv.forward(np.ones((3, 2, 4, 2), np.float32))
