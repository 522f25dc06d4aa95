"""pyai.keras: a Dense layer and attention on pyai's kernels, against Keras's own.

Values and gradients (tf.GradientTape) are compared with keras.layers.Dense and
keras.ops.dot_product_attention in float32, to a relative error of 1e-5 (||out - ref|| / ||ref||):
both compute in float32 and differ only in the order of their sums (but where Keras's tanh, sigmoid
and gelu cancel: saturating_tolerance, gelu_tolerance). A small model trained by
model.fit from the same weights on the same batches keeps its losses within 1e-4 relative of the
stock model's over its epochs (the same float32 differences, compounded by Adam's steps).
"""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pyai_keras = pytest.importorskip("pyai.keras")

from conftest import assert_close  # noqa: E402
from pyai.kernels.common import activation_reference  # noqa: E402

TOLERANCE = 1e-5
KERAS_ACTIVATIONS = {None: None, "gelu": lambda z: keras.activations.gelu(z, approximate=True),
                     "relu": "relu", "leaky_relu": lambda z: keras.activations.leaky_relu(z, 0.2),
                     "sigmoid": "sigmoid", "tanh": "tanh"}


def normal(rng, *shape):
    return tf.constant(rng.standard_normal(shape).astype(np.float32))


def values_and_gradients(function, inputs, variables, dy):
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = function(*inputs)
        loss = tf.reduce_sum(out * dy)
    return [out, *tape.gradient(loss, [*inputs, *variables])]


def compare(what, ours, theirs, gradient_tolerance=TOLERANCE, output_tolerance=TOLERANCE):
    for index, (out, ref) in enumerate(zip(ours, theirs, strict=True)):
        assert_close(f"{what}: {'output' if index == 0 else f'gradient {index}'}", out.numpy(),
                     ref.numpy(), output_tolerance if index == 0 else gradient_tolerance)


def saturating_tolerance(y):
    """tanh and sigmoid gradients come from the rounded output, 1 - y^2 and y (1 - y): where the
    unit saturates they cancel, and one ulp of y (pyai's and TensorFlow's y may differ by one) is
    a relative error of up to ~6e-8 / (1 - |y|) in the gradient (1e-5 already at |y| = 0.994)."""
    margin = 1.0 - np.abs(y.numpy().astype(np.float64)).max()
    return max(TOLERANCE, 10 * 6e-8 / max(margin, 1e-7))


def gelu_tolerance(z):
    """Keras's float32 gelu(approximate=True) is z (1 + tanh u) / 2, u = sqrt(2/pi) (z + 0.044715
    z^3): where tanh u nears -1 (z below about -2) the sum cancels, and one ulp of tanh u is a
    relative error of ~6e-8 / (1 + tanh u) in Keras's y and its gradient (2e-4 at z = -3.7);
    pyai's sigmoid form does not cancel (kernels/numba_cpu/gelu.py). And the derivative,
    (1 + tanh u) / 2 + z (1 - tanh^2 u) u' / 2, is the difference of two terms near 0.23 where it
    crosses 0 (z = -0.75): there both float32 versions are off by a few ulp of those terms, a
    relative error of ~6e-8 / |gelu'(z)| in every gradient (a one-element layer drew gelu'(z)
    ~2e-4 and read 1.4e-5); over many elements the norm of gelu'(z) counts, not its smallest."""
    z = np.asarray(z, np.float64)
    t = np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))
    margin = (1.0 + t).min()
    slope = (1 + t) / 2 + z * (1 - t**2) * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * z**2) / 2   # gelu'(z)
    slope_norm = np.sqrt(np.mean(slope**2))
    return max(TOLERANCE, 10 * 6e-8 / max(margin, 1e-30), 10 * 6e-8 / max(slope_norm, 1e-30))


@pytest.mark.parametrize("activation", list(KERAS_ACTIVATIONS))
@pytest.mark.parametrize("x_shape, units, use_bias", [((1, 1), 1, True), ((13, 17), 5, True),
                                                      ((2, 7, 31), 11, False)])
def test_dense_matches_keras_dense_and_its_gradients(rng, activation, x_shape, units, use_bias):
    x = normal(rng, *x_shape)
    ours = pyai_keras.Dense(units, activation=activation, use_bias=use_bias)
    theirs = keras.layers.Dense(units, activation=KERAS_ACTIVATIONS[activation], use_bias=use_bias)
    ours.build(x.shape), theirs.build(x.shape)
    theirs.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in theirs.get_weights()])
    ours.set_weights(theirs.get_weights())
    dy = normal(rng, *x_shape[:-1], units)
    expected = values_and_gradients(theirs, [x], theirs.trainable_variables, dy)
    tolerance = saturating_tolerance(expected[0]) if activation in ("tanh", "sigmoid") else TOLERANCE
    got = values_and_gradients(ours, [x], ours.trainable_variables, dy)
    if activation == "gelu":   # Keras's float32 cancels where pyai's does not: pyai held to float64 there
        weights = theirs.get_weights()
        z = x.numpy().astype(np.float64) @ weights[0] + (weights[1] if use_bias else 0.0)
        tolerance = gelu_tolerance(z)
        assert_close(f"Dense gelu x{x_shape}: output vs float64", got[0].numpy(), activation_reference(z, "gelu"),
                     TOLERANCE)
    compare(f"Dense {activation} x{x_shape}", got, expected, tolerance,
            output_tolerance=tolerance if activation == "gelu" else TOLERANCE)


def keras_layout(x):
    return tf.transpose(x, (0, 2, 1, 3))   # (B, H, T, D) <-> (B, T, H, D)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 3, 17, 17, 8), (1, 2, 5, 13, 16)],
                         ids=["1", "B2-H3-T17-D8", "Tq5-Tk13"])
def test_attention_matches_keras_dot_product_attention(rng, causal, shape):
    batch, heads, queries, keys, depth = shape
    q, k, v = normal(rng, batch, heads, queries, depth), normal(rng, batch, heads, keys, depth), normal(
        rng, batch, heads, keys, depth)
    do = normal(rng, batch, heads, queries, depth)
    # pyai's causal mask is aligned bottom-right (query i sees keys j <= i + Tk - Tq); Keras's
    # is_causal is top-left, so the same mask is given to Keras explicitly.
    mask = np.tril(np.ones((queries, keys), bool), keys - queries) if causal else None

    def keras_attention(q, k, v):
        return keras_layout(keras.ops.dot_product_attention(*map(keras_layout, (q, k, v)), mask=mask))

    compare(f"attention causal={causal} {shape}",
            values_and_gradients(lambda q, k, v: pyai_keras.attention(q, k, v, causal=causal), [q, k, v], [], do),
            values_and_gradients(keras_attention, [q, k, v], [], do))


class TinyTransformer(keras.Model):
    """(B, T, C) -> (B, 1): causal self-attention and a GELU Dense, then the mean over time to one
    number; on pyai's layers, or Keras's Dense and dot-product attention."""

    def __init__(self, channels, heads, use_pyai):
        super().__init__()
        self.heads, self.use_pyai = heads, use_pyai
        dense = pyai_keras.Dense if use_pyai else keras.layers.Dense
        self.c_attn = dense(3 * channels)
        self.c_fc = dense(channels, activation="gelu" if use_pyai else KERAS_ACTIVATIONS["gelu"])
        self.head = dense(1)
        self.attend = pyai_keras.Attention(causal=True) if use_pyai else None

    def call(self, x):
        batch, time, channels = tf.shape(x)[0], x.shape[1], x.shape[2]
        heads = [tf.transpose(tf.reshape(t, (batch, time, self.heads, -1)), (0, 2, 1, 3))
                 for t in tf.split(self.c_attn(x), 3, axis=2)]   # (B, H, T, D)
        if self.use_pyai:
            y = self.attend(heads)
        else:
            y = keras_layout(keras.ops.dot_product_attention(*map(keras_layout, heads), is_causal=True))
        y = tf.reshape(tf.transpose(y, (0, 2, 1, 3)), (batch, time, channels))
        return self.head(tf.reduce_mean(self.c_fc(x + y), axis=1))


def test_a_model_fits_as_the_stock_one_does(rng):
    x = rng.standard_normal((32, 9, 12)).astype(np.float32)
    target = rng.standard_normal((32, 1)).astype(np.float32)
    ours, stock = TinyTransformer(12, 2, use_pyai=True), TinyTransformer(12, 2, use_pyai=False)
    ours(x[:1]), stock(x[:1])
    stock.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in stock.get_weights()])
    ours.set_weights(stock.get_weights())
    histories = []
    for model in (ours, stock):
        model.compile(keras.optimizers.Adam(1e-2), "mse")
        histories.append(np.array(model.fit(x, target, batch_size=8, epochs=4, shuffle=False,
                                            verbose=0).history["loss"]))
    assert not ours.jit_compile, "a model with pyai's layers must not be compiled by XLA"
    assert histories[1][-1] < 0.8 * histories[1][0], f"the stock model did not learn: {histories[1]}"
    assert np.allclose(*histories, rtol=1e-4, atol=0), f"{histories[0]} vs {histories[1]}"


def test_dense_config_round_trips():
    layer = pyai_keras.Dense(4, activation="leaky_relu", alpha=0.1, use_bias=False)
    again = pyai_keras.Dense.from_config(layer.get_config())
    assert (again.units, again.activation, again.alpha, again.use_bias) == (4, "leaky_relu", 0.1, False)


def test_bad_inputs_are_refused_naming_the_argument(rng):
    with pytest.raises(TypeError, match="^x: expected a float32 tensor, got float64"):
        pyai_keras.linear(tf.ones((2, 3), tf.float64), tf.ones((3, 4)))
    with pytest.raises(ValueError, match=r"^w: expected shape \(3, out\)"):
        pyai_keras.linear(tf.ones((2, 3)), tf.ones((4, 4)))
    with pytest.raises(ValueError, match="^activation: expected one of"):
        pyai_keras.Dense(3, activation="softplus")
    with pytest.raises(ValueError, match="^q: expected a 4-d tensor"):
        pyai_keras.attention(tf.ones((2, 3, 4)), tf.ones((2, 3, 4)), tf.ones((2, 3, 4)))
