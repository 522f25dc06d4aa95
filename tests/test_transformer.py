"""pyai's transformer layers against Keras's, with the same weights: outputs and every gradient.

Tolerances, relative: 1e-5 for outputs (float32 on both sides, sums of a few dozen products);
1e-4 for gradients, which go back through softmax and the layer norm's division by the standard
deviation, where float32 rounding differences of the two implementations (online softmax in
pyai's attention, a materialized one in Keras) are amplified by up to the inverse of the smallest
probability or standard deviation involved.
"""

import numpy as np
import pytest

from conftest import assert_close, require, skip_in_cuda_simulator
from pyai import dispatch, ops
from pyai.nn import GELU, Dense, Embedding, LayerNorm, MultiHeadAttention, TransformerBlock

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-4
ATTENTION_OPS = ["linear", "matmul", "attention", "attention_grad"]


def requires(backend, ops):
    for op in ops:
        require(op, backend)


def keras_gradients(layer, inputs, variables, dy):
    """(y, [d(sum(y * dy)) / d input, then / d variable for each variable]) from Keras."""
    inputs = tf.constant(inputs)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = layer(inputs)
        loss = tf.reduce_sum(y * dy)
    return y.numpy(), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, [inputs, *variables])]


@pytest.mark.parametrize("shape", [(2, 5, 8), (3, 33)])
def test_layer_norm_matches_keras(backend, rng, shape):
    requires(backend, ["layer_norm", "layer_norm_grad"])
    channels = shape[-1]
    layer = LayerNorm(channels, epsilon=1e-3)   # Keras's default epsilon
    layer.gamma[...] = rng.normal(1, 0.3, channels)
    layer.beta[...] = rng.normal(0, 0.3, channels)
    reference = keras.layers.LayerNormalization(epsilon=1e-3)
    reference.build(shape)
    reference.set_weights([layer.gamma, layer.beta])
    x = rng.normal(0.5, 2, shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    variables = [reference.gamma, reference.beta]
    y_ref, (dx_ref, dgamma_ref, dbeta_ref) = keras_gradients(reference, x, variables, dy)
    assert_close(f"{backend} {shape} y", layer.forward(x), y_ref, TOLERANCE)
    dx = layer.backward(dy)
    for name, out, ref in (("dx", dx, dx_ref), ("dgamma", layer.grad_gamma, dgamma_ref),
                           ("dbeta", layer.grad_beta, dbeta_ref)):
        assert_close(f"{backend} {shape} {name}", out, ref, GRADIENT_TOLERANCE)


def keras_attention(layer):
    """Keras MultiHeadAttention holding `layer`'s weights: (C, C) -> (C, H, D) for query, key and
    value, (C, C) -> (H, D, C) for the output; biases likewise."""
    heads, depth = layer.heads, layer.channels // layer.heads
    reference = keras.layers.MultiHeadAttention(heads, depth)
    x = np.zeros((1, 1, layer.channels), np.float32)
    reference(x, x)   # builds the variables
    weights = []
    for dense in (layer.query, layer.key, layer.value):
        weights += [dense.weight.reshape(-1, heads, depth), dense.bias.reshape(heads, depth)]
    weights += [layer.output.weight.reshape(heads, depth, -1), layer.output.bias]
    reference.set_weights(weights)
    return reference


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("batch,time,channels,heads", [(1, 3, 4, 2), (2, 7, 16, 2), (1, 20, 24, 4)])
def test_multi_head_attention_matches_keras(backend, rng, causal, batch, time, channels, heads):
    requires(backend, ATTENTION_OPS)
    if time > 3 or not causal:   # one case is enough there: each takes ~12 s
        skip_in_cuda_simulator(backend, "attention layer beyond the smallest causal case")
    layer = MultiHeadAttention(channels, heads, causal=causal, rng=rng)
    for _, parameter in layer.parameters():   # Keras starts biases at zero: nonzero ones test the copy
        parameter[...] = rng.normal(0, 0.3, parameter.shape)
    reference = keras_attention(layer)
    x = rng.normal(size=(batch, time, channels)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    y_ref, (dx_ref, *grads_ref) = keras_gradients(lambda x: reference(x, x, use_causal_mask=causal), x,
                                                  reference.weights, dy)
    case = f"{backend} causal={causal} B={batch} T={time} C={channels} H={heads}"
    assert_close(f"{case} y", layer.forward(x), y_ref, TOLERANCE)
    assert_close(f"{case} dx", layer.backward(dy), dx_ref, GRADIENT_TOLERANCE)
    for (name, grad), grad_ref in zip(layer.gradients(), grads_ref, strict=True):
        if name == "key.bias":
            # softmax ignores a shift of every score of a row, which is all the key bias adds: its
            # gradient is zero, so both sides hold only rounding noise, which grows with the
            # B T T terms summed (1.2e-5 seen at T=20); a wrong gradient would be ~0.1 or more
            noise = max(1e-5, 1e-7 * batch * time * time)
            assert np.abs(grad).max() < noise and np.abs(grad_ref).max() < noise, f"{case} {name}"
        else:
            assert_close(f"{case} {name}", grad, grad_ref.reshape(grad.shape), GRADIENT_TOLERANCE)


def test_embedding_matches_keras(backend, rng):
    requires(backend, ["embedding", "embedding_grad"])
    layer = Embedding(11, 6, rng)
    reference = keras.layers.Embedding(11, 6)
    reference.build((None,))
    reference.set_weights([layer.table])
    ids = rng.integers(0, 11, (4, 9))   # repeats: their gradients must add up
    dy = rng.normal(size=(4, 9, 6)).astype(np.float32)
    with tf.GradientTape() as tape:
        y_ref = reference(ids)
        loss = tf.reduce_sum(y_ref * dy)
    grad_ref = tf.convert_to_tensor(tape.gradient(loss, reference.embeddings)).numpy()
    assert_close(f"{backend} y", layer.forward(ids), y_ref.numpy(), TOLERANCE)
    assert layer.backward(dy) is None
    assert_close(f"{backend} dtable", layer.grad_table, grad_ref, TOLERANCE)


def test_transformer_block_names_its_parameters_like_nanogpt():
    block = TransformerBlock(8, 2, rng=np.random.default_rng(0))
    names = [name for name, _ in block.parameters()]
    assert names[:4] == ["ln_1.gamma", "ln_1.beta", "attn.query.weight", "attn.query.bias"]
    assert names[-4:] == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    assert [name for name, _ in block.gradients()] == names


def test_multi_head_attention_rejects_heads_that_do_not_divide_channels():
    with pytest.raises(ValueError, match="heads: must divide channels"):
        MultiHeadAttention(10, 3)


def three_dense_attention(layer, x, dy):
    """float64 y and d(sum(y * dy)) / dx of the layer's math with q, k, v as three separate
    products and heads split by copies: x @ W + b per projection, softmax per head, output."""
    batch, time, channels = x.shape
    heads, depth = layer.heads, channels // layer.heads
    rows = x.reshape(-1, channels).astype(np.float64)

    def project(dense, inputs):
        return inputs @ dense.weight.astype(np.float64) + dense.bias

    def split(z):
        return z.reshape(batch, time, heads, depth).transpose(0, 2, 1, 3)

    q, k, v = (split(project(dense, rows)) for dense in (layer.query, layer.key, layer.value))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(depth)
    if layer.causal:
        s = np.where(np.tril(np.ones((time, time), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(-1, channels)
    y = project(layer.output, o).reshape(x.shape)
    do = split(dy.reshape(-1, channels).astype(np.float64) @ layer.output.weight.T.astype(np.float64))
    dp = do @ v.transpose(0, 1, 3, 2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) / np.sqrt(depth)
    grads = {"query": ds @ k, "key": ds.transpose(0, 1, 3, 2) @ q, "value": p.transpose(0, 1, 3, 2) @ do}
    dx = sum(grads[name].transpose(0, 2, 1, 3).reshape(-1, channels) @ dense.weight.T.astype(np.float64)
             for name, dense in (("query", layer.query), ("key", layer.key), ("value", layer.value)))
    return y, dx.reshape(x.shape)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("batch,time,channels,heads", [(1, 1, 6, 3), (2, 13, 28, 2), (3, 37, 60, 4)])
def test_multi_head_attention_is_three_projections_then_attention(backend, rng, causal, batch, time,
                                                                   channels, heads):
    """The fused qkv product and attention on its output (attention_qkv where the backend has
    it, split heads elsewhere) against float64 math with three separate projections."""
    requires(backend, ATTENTION_OPS)
    # the simulator's split-heads path is test_multi_head_attention_matches_keras's smallest case
    skip_in_cuda_simulator(backend, "attention layer")
    layer = MultiHeadAttention(channels, heads, causal=causal, rng=rng)
    for _, parameter in layer.parameters():
        parameter[...] = rng.normal(0, 0.3, parameter.shape)
    x = rng.normal(size=(batch, time, channels)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    y_ref, dx_ref = three_dense_attention(layer, x, dy)
    case = f"{backend} causal={causal} B={batch} T={time} C={channels} H={heads}"
    assert_close(f"{case} y", layer.forward(x), y_ref, TOLERANCE)
    assert_close(f"{case} dx", layer.backward(dy), dx_ref, GRADIENT_TOLERANCE)


def test_multi_head_attention_reads_qkv_in_place_or_splits_heads_alike(rng, monkeypatch):
    """On numba-cpu the layer takes attention_qkv; with that turned off (as on a backend without
    it) the split-heads path must give the same outputs and gradients."""
    layer = MultiHeadAttention(24, 3, causal=True, rng=rng)
    for _, parameter in layer.parameters():
        parameter[...] = rng.normal(0, 0.3, parameter.shape)
    x = rng.normal(size=(2, 29, 24)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    results = []
    for reads_qkv in (True, False):
        monkeypatch.setattr(MultiHeadAttention, "reads_qkv", staticmethod(lambda answer=reads_qkv: answer))
        y, dx = layer.forward(x), layer.backward(dy)
        results.append([y, dx] + [np.copy(gradient) for _, gradient in layer.gradients()])
    assert layer.q is not None   # the second pass split the heads
    for strided, split in zip(*results, strict=True):
        np.testing.assert_array_equal(strided, split)


def test_gelu_keeps_its_derivative_where_products_multiply_and_gives_gelu_grads_floats(backend, rng):
    require("gelu_grad", backend)
    x = rng.uniform(-3, 3, (4, 7, 9)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    layer = GELU()
    np.testing.assert_array_equal(layer.forward(x), ops.gelu(x))
    assert (layer.derivative is not None) == dispatch.implements("matmul_times")
    np.testing.assert_array_equal(layer.backward(dy), ops.gelu_grad(dy, x))
    with pytest.raises(ValueError, match="dy must have the forward output's shape"):
        layer.backward(dy[:2])


def test_dense_forward_gelu_is_its_forward_then_gelu_with_the_derivative(rng):
    """Dense.forward_gelu: (gelu(forward(x)), gelu'(forward(x))), the floats of forward then
    ops.gelu's return_derivative; backward then takes d loss / d forward(x); clear errors for a
    Dense with an activation of its own and for x of the wrong shape."""
    layer = Dense(13, 29, rng=rng)
    layer.bias[...] = rng.standard_normal(29)
    x = rng.standard_normal((7, 13)).astype(np.float32)
    dpre = rng.standard_normal((7, 29)).astype(np.float32)
    expected = ops.gelu(layer.forward(x), return_derivative=True)
    dx = layer.backward(dpre)
    for made, want in zip(layer.forward_gelu(x), expected, strict=True):
        np.testing.assert_array_equal(made, want)
    np.testing.assert_array_equal(layer.backward(dpre), dx)
    with pytest.raises(ValueError, match="expected x of shape \\(batch, 13\\), got \\(7, 12\\)"):
        layer.forward_gelu(x[:, :12])
    with pytest.raises(ValueError, match="forward_gelu is for a Dense of no activation"):
        Dense(13, 29, activation="relu", rng=rng).forward_gelu(x)


def test_transformer_block_fuses_its_backward_or_not_alike(rng, monkeypatch):
    """On numba-cpu the block's first mlp Dense makes GELU and its derivative in its product's
    epilogue (ops.linear's return_derivative), dy W^T of the second Dense is multiplied by that
    derivative as it is made (matmul's times), and the residuals' gradients are added as layer
    norm's are written; with the first turned off, or all of them (as on a backend without
    them), the layers' own forwards and backwards and in-place adds must give the same floats."""
    block = TransformerBlock(24, 4, rng=rng)
    for _, parameter in block.parameters():
        parameter[...] = rng.normal(0, 0.3, parameter.shape)
    x = rng.normal(size=(2, 29, 24)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    implements = dispatch.implements
    expand, gelu, project = block.mlp.layers
    results = []
    for off in ((), ("linear_with_gelu_derivative",),
                ("linear_with_gelu_derivative", "matmul_times", "layer_norm_grad_residual")):
        monkeypatch.setattr(dispatch, "implements", lambda op, backend=None, off=off: (
            op not in off and implements(op, backend)))
        y, dx = block.forward(x), block.backward(dy)
        results.append([y, dx] + [np.copy(gradient) for _, gradient in block.gradients()])
        # where the first Dense's product makes GELU, its output is the second's input: no pre-activation
        assert (project.x is expand.y) == (not off and implements("linear_with_gelu_derivative"))
    assert gelu.derivative is None   # the last pass kept x
    for fused, plain in zip(results[0], results[2], strict=True):
        np.testing.assert_array_equal(fused, plain)
    for fused, plain in zip(results[1], results[2], strict=True):
        np.testing.assert_array_equal(fused, plain)
