"""Property-based checks of every public op against the float64 references beside the numba-cpu
kernels, on every usable backend that has the op (the GPU backends on a GPU: the numba-cuda
backend under the CUDA simulator would take minutes): hypothesis draws shapes, dtypes (float32,
float64, int32), memory layouts (C order, Fortran order, strided views, reversed views, ndarray
subclasses) and values.

Tolerance: float32 kernels against float64 references, 2e-4 relative and 2e-4 times the
magnitude of the inputs absolute (sums of up to ~40 float32 products). The example budget is
small (MAX_EXAMPLES per op, no deadline: the first call of a shape may compile) so the file runs
in well under a minute.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import require, skip_in_cuda_simulator
from pyai import ops
from pyai.kernels.numba_cpu import (adam, attention_backward, attention_forward, bias_grad, binary_crossentropy,
                                    conv2d, conv2d_backward, conv2d_transpose,
                                    conv2d_transpose_backward, embedding, gelu, layer_norm, leaky_relu,
                                    matmul, mse, relu, sgd, sigmoid, softmax, softmax_cross_entropy, tanh)

MAX_EXAMPLES = 30
RTOL = ATOL = 2e-4
PROPERTY = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


class Tagged(np.ndarray):
    pass


LAYOUTS = ["C", "F", "strided", "reversed", "subclass"]


def draw_array(data, shape, low=-3.0, high=3.0, integers=False):
    """(array as the op gets it, its values as float64 the op computes on)."""
    dtype = data.draw(st.sampled_from(["float32", "float64", "int32"] if integers else ["float32", "float64"]))
    layout = data.draw(st.sampled_from(LAYOUTS))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    if dtype == "int32":
        values = rng.integers(int(low), int(high) + 1, shape).astype(np.int32)
    else:
        values = rng.uniform(low, high, shape).astype(dtype)
    exact = values.astype(np.float32).astype(np.float64)
    if values.ndim == 0:
        array = values
    elif layout == "F":
        array = np.asfortranarray(values)
    elif layout == "strided":
        array = np.repeat(values, 2, axis=-1)[..., ::2]
    elif layout == "reversed":
        array = np.ascontiguousarray(values[::-1])[::-1]
    elif layout == "subclass":
        array = values.view(Tagged)
    else:
        array = values
    assert np.array_equal(np.asarray(array, np.float64), values.astype(np.float64))
    return array, exact


def dims(data, low=1, high=9):
    return data.draw(st.integers(low, high))


def close(result, expected, scale=1.0, what=""):
    np.testing.assert_allclose(np.asarray(result, np.float64), expected, rtol=RTOL,
                               atol=ATOL * max(scale, 1.0), err_msg=what)


def elementwise(op, reference, grad=False, y_range=None):
    def check(data):
        shape = tuple(dims(data, 1, 6) for _ in range(dims(data, 0, 3)))
        x, x64 = draw_array(data, shape, *(y_range or (-3.0, 3.0)), integers=not grad)
        if grad:
            dy, dy64 = draw_array(data, shape)
            close(op(dy, x), reference(dy64, x64), 3.0)
        else:
            close(op(x), reference(x64), 3.0)
    return check


def check_matmul(data):
    m, k, n = dims(data), dims(data, 1, 40), dims(data)
    transpose_a, transpose_b = data.draw(st.booleans()), data.draw(st.booleans())
    a, a64 = draw_array(data, (k, m) if transpose_a else (m, k), integers=True)
    b, b64 = draw_array(data, (n, k) if transpose_b else (k, n), integers=True)
    expected = matmul.matmul_reference(a64.T if transpose_a else a64, b64.T if transpose_b else b64)
    close(ops.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b), expected, 9 * k)


def check_linear(data):
    rows, inputs, outputs = dims(data), dims(data, 1, 20), dims(data)
    activation = data.draw(st.sampled_from(ops.ACTIVATIONS))
    x, x64 = draw_array(data, (rows, inputs))
    w, w64 = draw_array(data, (inputs, outputs))
    b, b64 = draw_array(data, (outputs,))
    expected = matmul.matmul_reference(x64, w64, b64, activation, 0.2)
    close(ops.linear(x, w, b, activation=activation), expected, 9 * inputs)


def check_leaky_relu(data):
    shape = (dims(data), dims(data))
    x, x64 = draw_array(data, shape, integers=True)
    dy, dy64 = draw_array(data, shape)
    alpha = data.draw(st.floats(0, 1))
    close(ops.leaky_relu(x, alpha), leaky_relu.leaky_relu_forward_reference(x64, np.float32(alpha)), 3)
    close(ops.leaky_relu_grad(dy, x, alpha), leaky_relu.leaky_relu_backward_reference(dy64, x64, np.float32(alpha)), 3)


def check_losses(data):
    shape = (dims(data), dims(data))
    p, p64 = draw_array(data, shape, 0.01, 0.99)
    t, t64 = draw_array(data, shape, 0.0, 1.0)
    close(ops.mse(p, t), mse.mse_forward_reference(p64, t64))
    close(ops.mse_grad(p, t), mse.mse_backward_reference(p64, t64))
    close(ops.binary_crossentropy(p, t), binary_crossentropy.bce_forward_reference(p64, t64))
    close(ops.binary_crossentropy_grad(p, t), binary_crossentropy.bce_backward_reference(p64, t64), 100)
    z, z64 = draw_array(data, shape, -8.0, 8.0)
    close(ops.binary_crossentropy(z, t, from_logits=True), binary_crossentropy.bce_logits_forward_reference(z64, t64))
    close(ops.binary_crossentropy_grad(z, t, from_logits=True),
          binary_crossentropy.bce_logits_backward_reference(z64, t64))


def check_attention(data):
    batch, heads, depth = dims(data, 1, 2), dims(data, 1, 3), dims(data, 1, 16)
    keys = dims(data, 1, 24)
    queries = dims(data, 1, keys)
    causal = data.draw(st.booleans())
    scale = data.draw(st.sampled_from([None, 0.1, 1.0]))
    q, q64 = draw_array(data, (batch, heads, queries, depth))
    k, k64 = draw_array(data, (batch, heads, keys, depth))
    v, v64 = draw_array(data, (batch, heads, keys, depth))
    do, do64 = draw_array(data, (batch, heads, queries, depth))
    s = 1 / np.sqrt(depth) if scale is None else scale
    o, lse = ops.attention(q, k, v, causal=causal, scale=scale, return_lse=True)
    o64, lse64 = attention_forward.attention_forward_reference(q64, k64, v64, causal, s)
    close(o, o64, 3)
    close(lse, lse64, 10)
    grads = ops.attention_grad(do, q, k, v, o, lse, causal=causal, scale=scale)
    for name, got, want in zip("dq dk dv".split(), grads,
                               attention_backward.attention_backward_reference(do64, q64, k64, v64, causal, s)):
        close(got, want, 10 * keys, name)


def check_attention_qkv(data):
    """attention over one (B, T, 3, H, D) projection output against the reference on its heads."""
    batch, time, heads, depth = dims(data, 1, 2), dims(data, 1, 24), dims(data, 1, 3), dims(data, 1, 16)
    causal = data.draw(st.booleans())
    qkv, qkv64 = draw_array(data, (batch, time, 3, heads, depth))
    do, do64 = draw_array(data, (batch, time, heads, depth))
    q64, k64, v64 = (qkv64[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    s = 1 / np.sqrt(depth)
    o, lse = ops.attention_qkv(qkv, causal=causal, return_lse=True)
    o64, lse64 = attention_forward.attention_forward_reference(q64, k64, v64, causal, s)
    close(o, o64.transpose(0, 2, 1, 3), 3)
    close(lse, lse64, 10)
    dqkv = ops.attention_qkv_grad(do, qkv, o, lse, causal=causal)
    wants = attention_backward.attention_backward_reference(do64.transpose(0, 2, 1, 3), q64, k64, v64, causal, s)
    for i, (name, want) in enumerate(zip("dq dk dv".split(), wants)):
        close(dqkv[:, :, i], want.transpose(0, 2, 1, 3), 10 * time, name)


def check_layer_norm(data):
    shape = tuple(dims(data, 1, 5) for _ in range(dims(data, 0, 2))) + (dims(data, 2, 40),)
    x, x64 = draw_array(data, shape, integers=True)
    gamma, gamma64 = draw_array(data, shape[-1:])
    beta, beta64 = draw_array(data, shape[-1:])
    dy, dy64 = draw_array(data, shape)
    x64 = x64 + np.linspace(0, 1, shape[-1])   # never a constant row (rstd 1/sqrt(epsilon))
    x = x64.astype(np.float32)
    y, mean, rstd = ops.layer_norm(x, gamma, beta, return_stats=True)
    y64, mean64, rstd64 = layer_norm.layer_norm_forward_reference(x64, gamma64, beta64, 1e-5)
    close(y, y64, 10)
    grads = ops.layer_norm_grad(dy, x, gamma, mean, rstd)
    for name, got, want in zip("dx dgamma dbeta".split(), grads,
                               layer_norm.layer_norm_backward_reference(dy64, x64, gamma64, 1e-5)):
        close(got, want, 10 * np.prod(shape[:-1]), name)


def check_bias_grad(data):
    shape = tuple(dims(data, 1, 40) for _ in range(dims(data, 1, 4)))
    dy, dy64 = draw_array(data, shape, integers=True)
    close(ops.bias_grad(dy), bias_grad.bias_grad_reference(dy64), 3 * np.prod(shape[:-1]))


def check_weight_and_bias_grad(data):
    rows, inputs, outputs = dims(data, 1, 40), dims(data, 1, 20), dims(data)
    x, x64 = draw_array(data, (rows, inputs), integers=True)
    dy, dy64 = draw_array(data, (rows, outputs), integers=True)
    dweight, dbias = ops.weight_and_bias_grad(x, dy)
    close(dweight, x64.T @ dy64, 9 * rows, "dweight")
    close(dbias, bias_grad.bias_grad_reference(dy64), 3 * rows, "dbias")


def check_softmax(data):
    shape = tuple(dims(data, 1, 5) for _ in range(dims(data, 0, 2))) + (dims(data, 1, 40),)
    x, x64 = draw_array(data, shape, -30.0, 30.0, integers=True)
    close(ops.softmax(x), softmax.softmax_reference(x64))


def check_softmax_cross_entropy(data):
    rows, classes = dims(data, 1, 12), dims(data, 1, 40)
    logits, logits64 = draw_array(data, (rows, classes), -10.0, 10.0)
    targets = np.random.default_rng(data.draw(st.integers(0, 99))).integers(0, classes, rows)
    loss, dlogits = ops.softmax_cross_entropy(logits, targets)
    loss64, dlogits64 = softmax_cross_entropy.softmax_cross_entropy_reference(logits64, targets)
    close(loss, loss64, 10)
    close(dlogits, dlogits64)


def check_embedding(data):
    vocab, width = dims(data, 1, 10), dims(data, 1, 70)
    ids_shape = tuple(dims(data, 1, 4) for _ in range(dims(data, 0, 2)))
    ids = np.random.default_rng(data.draw(st.integers(0, 99))).integers(0, vocab, ids_shape)
    ids = ids.astype(data.draw(st.sampled_from([np.int64, np.int32, np.uint8])))
    table, table64 = draw_array(data, (vocab, width), integers=True)
    out = ops.embedding(ids, table)
    assert out.shape == ids.shape + (width,)
    close(out, embedding.embedding_forward_reference(ids, table64))
    dout, dout64 = draw_array(data, ids.shape + (width,))
    close(ops.embedding_grad(dout, ids, vocab), embedding.embedding_backward_reference(dout64, ids, vocab), 10)


def check_updates(data):
    shape = tuple(dims(data, 1, 9) for _ in range(dims(data, 1, 3)))
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    param = rng.standard_normal(shape).astype(np.float32)
    grad, grad64 = draw_array(data, shape)
    lr = data.draw(st.floats(1e-4, 1.0))
    got, want = param.copy(), param.copy()
    ops.sgd_update(got, grad, lr=lr)
    sgd.sgd_update_reference(want, grad64.astype(np.float32), lr)
    close(got, want)
    m, v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    m_want, v_want, got, want = m.copy(), v.copy(), param.copy(), param.copy()
    for step in (1, 2):
        ops.adam_update(got, grad, m, v, step=step, lr=lr)
        adam.adam_update_reference(want, grad64.astype(np.float32), m_want, v_want, lr, 0.9, 0.999, 1e-7, step)
    close(got, want, 1, "param")
    close(m, m_want, 1, "m")
    close(v, v_want, 1, "v")
    batch, inputs, outputs = dims(data, 1, 9), dims(data, 1, 9), dims(data, 1, 9)   # a dense layer's
    (x, _), (dy, _) = draw_array(data, (batch, inputs)), draw_array(data, (batch, outputs))
    state = [rng.standard_normal((inputs + 1, outputs)).astype(np.float32) ** 2 for _ in range(3)]
    apart, fused = [array.copy() for array in state], [array.copy() for array in state]
    grad, fused_grad = np.empty((inputs + 1, outputs), np.float32), np.empty((inputs + 1, outputs), np.float32)
    ops.weight_and_bias_grad(x, dy, out=grad)
    ops.adam_update(apart[0], grad, *apart[1:], step=3, lr=lr)
    ops.dense_adam_update(x, dy, fused_grad, *fused, step=3, lr=lr)
    assert np.array_equal(fused_grad, grad, equal_nan=True)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(fused, apart))


def conv_check(transpose):
    """Conv2D (or Conv2DTranspose) and its gradients against the float64 references, at small
    random shapes: up to 4 output channels take the direct kernels, more the im2col + matmul path."""
    forward, gradient = ((ops.conv2d_transpose, ops.conv2d_transpose_grad) if transpose else
                         (ops.conv2d, ops.conv2d_grad))
    reference, gradient_reference = ((conv2d_transpose.conv2d_transpose_reference,
                                      conv2d_transpose_backward.conv2d_transpose_backward_reference)
                                     if transpose else (conv2d.conv2d_reference,
                                                        conv2d_backward.conv2d_backward_reference))

    def check(data):
        images, height, width = dims(data, 1, 3), dims(data, 1, 7), dims(data, 1, 7)
        channels, filters = dims(data, 1, 5), dims(data, 1, 7)
        kernel = (dims(data, 1, 3), dims(data, 1, 3))
        stride = (dims(data, 1, 2), dims(data, 1, 2))
        fits = kernel[0] <= height and kernel[1] <= width
        padding = data.draw(st.sampled_from(["same", "valid"] if fits or transpose else ["same"]))
        activation = data.draw(st.sampled_from([None, "leaky_relu", "tanh"]))
        x, x64 = draw_array(data, (images, height, width, channels))
        w, w64 = draw_array(data, (*kernel, *((filters, channels) if transpose else (channels, filters))))
        b, b64 = draw_array(data, (filters,))
        scale = 9 * kernel[0] * kernel[1] * channels
        y = forward(x, w, b, stride=stride, padding=padding, activation=activation)
        close(y, reference(x64, w64, b64, stride, padding, activation), scale, "y")
        dy, dy64 = draw_array(data, y.shape)
        for name, out, expected in zip(["dx", "dw", "db"], gradient(dy, x, w, stride=stride, padding=padding),
                                       gradient_reference(dy64, x64, w64, stride, padding)):
            close(out, expected, 9 * max(scale, images * y.shape[1] * y.shape[2]), name)
    return check


CHECKS = {
    "matmul": check_matmul,
    "linear": check_linear,
    "leaky_relu, leaky_relu_grad": check_leaky_relu,
    "relu": elementwise(ops.relu, relu.relu_forward_reference),
    "relu_grad": elementwise(ops.relu_grad, relu.relu_backward_reference, grad=True),
    "sigmoid": elementwise(ops.sigmoid, sigmoid.sigmoid_forward_reference),
    "sigmoid_grad": elementwise(ops.sigmoid_grad, sigmoid.sigmoid_backward_reference, True, (0.0, 1.0)),
    "tanh": elementwise(ops.tanh, tanh.tanh_forward_reference),
    "tanh_grad": elementwise(ops.tanh_grad, tanh.tanh_backward_reference, True, (-1.0, 1.0)),
    "gelu": elementwise(ops.gelu, gelu.gelu_forward_reference),
    "gelu_grad": elementwise(ops.gelu_grad, gelu.gelu_backward_reference, grad=True),
    "bias_grad": check_bias_grad,
    "weight_and_bias_grad": check_weight_and_bias_grad,
    "mse, binary_crossentropy and grads": check_losses,
    "attention, attention_grad": check_attention,
    "attention_qkv, attention_qkv_grad": check_attention_qkv,
    "layer_norm, layer_norm_grad": check_layer_norm,
    "softmax": check_softmax,
    "softmax_cross_entropy": check_softmax_cross_entropy,
    "embedding, embedding_grad": check_embedding,
    "conv2d, conv2d_grad": conv_check(transpose=False),
    "conv2d_transpose, conv2d_transpose_grad": conv_check(transpose=True),
    "sgd_update, adam_update, dense_adam_update": check_updates,
}


# the backend ops (pyai.dispatch's columns) each check calls, where they are not its name's ops
ROW_OPS = {"mse, binary_crossentropy and grads": ["mse", "mse_grad", "binary_crossentropy", "binary_crossentropy_grad",
                                                  "binary_crossentropy_logits", "binary_crossentropy_logits_grad"],
           "sgd_update, adam_update, dense_adam_update": ["sgd_update", "adam_update", "dense_adam_update",
                                                         "weight_and_bias_grad"]}


def row_ops(name):
    return ROW_OPS.get(name, [op.strip() for op in name.split(",")])


def test_every_public_op_is_checked():
    public = {name for name in dir(ops) if not name.startswith("_") and callable(getattr(ops, name))
              and getattr(getattr(ops, name), "__module__", "") == "pyai.ops"} - {"per_call_backend"}
    covered = {name.strip() for key in CHECKS for name in key.replace(" and grads", "").split(",")}
    covered |= {"mse_grad", "binary_crossentropy_grad"}
    assert public <= covered, public - covered


@pytest.mark.parametrize("name", CHECKS)
@PROPERTY
@given(data=st.data())
def test_op_matches_its_float64_reference(backend, name, data):
    for op in row_ops(name):
        require(op, backend)
    skip_in_cuda_simulator(backend, "hypothesis's examples")
    with np.errstate(all="ignore"):
        CHECKS[name](data)
