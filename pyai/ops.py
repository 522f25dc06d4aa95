"""pyai's public ops: pure functions on numpy float32 arrays.

Each op checks its arguments once (see `pyai.checks` for the documented conversions and errors),
then calls the function that implements it on the chosen backend (`pyai.dispatch`). Every op takes
`backend=None` as a keyword: None means the current backend (`pyai.set_backend`, `pyai.use_backend`).
"""

import functools
import numbers

import numpy as np

from pyai import device
from pyai.checks import (as_bfloat16, as_float32, flag, gemm_operands, in_place, is_bfloat16, plain_array,
                         positive_int, real_number, same_shape)
from pyai.dispatch import get_backend, implementation, implements, takes_bfloat16_attention, use_backend
from pyai.kernels.common import ACTIVATIONS as kernel_activations
from pyai.kernels.common import PADDINGS, conv_output_size, conv_transpose_output_size


def per_call_backend(op):
    """Run the whole op, its argument checks included, on `backend=` when a call names one
    (the checks need it too: whether a GPU array is accepted depends on the backend)."""
    @functools.wraps(op)
    def call(*args, backend=None, **kwargs):
        if backend is None:
            return op(*args, **kwargs)
        with use_backend(backend):
            return op(*args, backend=backend, **kwargs)
    return call

ACTIVATIONS = tuple(kernel_activations)   # the fused epilogue's activations, as every backend codes them


@per_call_backend
def matmul(a, b, *, transpose_a=False, transpose_b=False, out=None, times=None, leaky_relu_output=None, alpha=0.2,
           backend=None):
    """op(a) @ op(b) for 2-d arrays, where op transposes when asked. Returns (M, N) float32: a
    new array, or `out`, a C-contiguous float32 numpy array of that shape written in place (a
    layer's view of a flat gradient buffer, say). On the cuda backend a and b may both be
    bfloat16 (see pyai.checks): products on bf16 tensor cores, sums and result in float32.
    times: an (M, N) float32 array the product is multiplied by, element by element, in the same
    pass (dy W^T times an activation's derivative kept from the forward: ops.gelu's
    return_derivative), the floats of the product and then numpy's multiply; numba-cpu only.
    leaky_relu_output: the (M, N) output y of a leaky ReLU of slope `alpha`; the product is
    multiplied by its gradient in the same pass (dy W^T made into d loss / d the pre-activation
    of the layer below), the floats of the product and then leaky_relu_grad(product, y, alpha);
    numba-cpu only. At most one of times and leaky_relu_output."""
    a, b = gemm_operands([("a", a, 2, None), ("b", b, 2, None)])
    transpose_a, transpose_b = flag("transpose_a", transpose_a), flag("transpose_b", transpose_b)
    k_a = a.shape[0] if transpose_a else a.shape[1]
    k_b = b.shape[1] if transpose_b else b.shape[0]
    if k_a != k_b:
        raise ValueError(f"b: inner dimensions differ: op(a) has {k_a} columns, op(b) has {k_b} rows "
                         f"(a {a.shape}, transpose_a={transpose_a}; b {b.shape}, transpose_b={transpose_b})")
    shape = (a.shape[1] if transpose_a else a.shape[0], b.shape[0] if transpose_b else b.shape[1])
    op, extra = "matmul", ()
    if times is not None and leaky_relu_output is not None:
        raise ValueError("times, leaky_relu_output: expected at most one of them, got both")
    if times is not None:
        op, extra = "matmul_times", (_product_factor("times", times, shape, "matmul_times", backend),)
    if leaky_relu_output is not None:
        op = "matmul_leaky_relu_grad"
        extra = (_product_factor("leaky_relu_output", leaky_relu_output, shape, op, backend),
                 real_number("alpha", alpha))
    if out is None:
        return implementation(op, backend)(a, b, transpose_a, transpose_b, *extra)
    target = in_place("out", out)
    if target.shape != shape:
        raise ValueError(f"out: expected shape {shape}, the product's, got {target.shape}")
    if any(np.may_share_memory(target, x) for x in (a, b, *extra[:1])):
        raise ValueError("out: shares memory with a or b (or the array it multiplies by), which the product reads")
    implementation(op, backend)(a, b, transpose_a, transpose_b, *extra, target)
    return out


def _product_factor(name, array, shape, op, backend):
    """matmul's `times` or `leaky_relu_output`: float32 of the product's shape, on a backend that
    multiplies the product by it (op), or a clear error."""
    array = as_float32(name, array)
    if array.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, the product's, got {array.shape}")
    if not implements(op, backend):
        raise NotImplementedError(f"{name}: the product times a matrix is not implemented on backend "
                                  f"{backend or get_backend()!r}")
    return array


@per_call_backend
def linear(x, w, b=None, *, activation=None, alpha=0.2, return_derivative=False, backend=None):
    """activation(x @ w + b) in one fused kernel; `w` is (in, out) like a Keras Dense kernel.

    x is (batch, in) or (in,); b is (out,) or None (float32); on the cuda backend x and w may both
    be bfloat16, as in `matmul`; activation is one of ACTIVATIONS (None, "leaky_relu", "relu",
    "sigmoid", "tanh", "gelu": the tanh approximation); alpha is leaky_relu's negative slope (>= 0,
    so that the sign of the output tells the sign of the input, which `pyai.nn.Dense.backward`
    relies on).
    With activation="gelu" and return_derivative=True, (y, gelu'(x @ w + b)), as `gelu`'s
    return_derivative gives them: numba-cpu makes both in the product's epilogue, so the
    pre-activation is never stored (a transformer's MLP); elsewhere linear, then gelu.
    """
    if flag("return_derivative", return_derivative):
        if activation != "gelu":
            raise ValueError(f"return_derivative: only with activation='gelu', got activation={activation!r}")
        if not implements("linear_with_gelu_derivative", backend):
            return gelu(linear(x, w, b, backend=backend), return_derivative=True, backend=backend)
    x, w = gemm_operands([("x", x, None, 1), ("w", w, 2, None)])
    if x.ndim > 2:
        raise ValueError(f"x: expected a 1-d or 2-d array, got shape {x.shape}")
    features = x.shape[x.ndim - 1]   # (not shape[-1]: the CUDA simulator's arrays reject it)
    if features != w.shape[0]:
        raise ValueError(f"w: expected {features} rows to match x's last dimension, got shape {w.shape}")
    if b is not None:
        b = as_float32("b", b, ndim=1)
        if b.shape[0] != w.shape[1]:
            raise ValueError(f"b: expected shape ({w.shape[1]},) to match w's columns, got {b.shape}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    alpha = real_number("alpha", alpha, low=0.0)
    if return_derivative:
        y, derivative = implementation("linear_with_gelu_derivative", backend)(
            x if x.ndim == 2 else x.reshape(1, features), w, b)
        return (y[0], derivative[0]) if x.ndim == 1 else (y, derivative)
    y = implementation("linear", backend)(x if x.ndim == 2 else x.reshape(1, features), w, b,
                                                activation, alpha)
    return y[0] if x.ndim == 1 else y


@per_call_backend
def leaky_relu(x, alpha=0.2, *, backend=None):
    """x where x > 0, alpha * x elsewhere."""
    x = as_float32("x", x)
    alpha = real_number("alpha", alpha)
    return implementation("leaky_relu", backend)(x, alpha)


@per_call_backend
def leaky_relu_grad(dy, x, alpha=0.2, *, backend=None):
    """dx = dy where x > 0, alpha * dy elsewhere (at x == 0 the slope is alpha, as in TensorFlow)."""
    dy = as_float32("dy", dy)
    x = as_float32("x", x)
    same_shape("dy", dy, "x", x)
    alpha = real_number("alpha", alpha)
    return implementation("leaky_relu_grad", backend)(dy, x, alpha)


@per_call_backend
def relu(x, *, backend=None):
    """max(x, 0)."""
    return implementation("relu", backend)(as_float32("x", x))


@per_call_backend
def relu_grad(dy, x, *, backend=None):
    """dx = dy where x > 0, 0 elsewhere."""
    dy, x = as_float32("dy", dy), as_float32("x", x)
    same_shape("dy", dy, "x", x)
    return implementation("relu_grad", backend)(dy, x)


@per_call_backend
def sigmoid(x, *, backend=None):
    """1 / (1 + exp(-x)), finite for any finite or infinite x."""
    return implementation("sigmoid", backend)(as_float32("x", x))


@per_call_backend
def sigmoid_grad(dy, y, *, backend=None):
    """dx = dy * y * (1 - y), from the forward output y."""
    dy, y = as_float32("dy", dy), as_float32("y", y)
    same_shape("dy", dy, "y", y)
    return implementation("sigmoid_grad", backend)(dy, y)


@per_call_backend
def tanh(x, *, backend=None):
    return implementation("tanh", backend)(as_float32("x", x))


@per_call_backend
def tanh_grad(dy, y, *, backend=None):
    """dx = dy * (1 - y^2), from the forward output y."""
    dy, y = as_float32("dy", dy), as_float32("y", y)
    same_shape("dy", dy, "y", y)
    return implementation("tanh_grad", backend)(dy, y)


def _prediction_and_target(prediction, target):
    prediction = as_float32("prediction", prediction)
    target = as_float32("target", target)
    same_shape("target", target, "prediction", prediction)
    return prediction, target


@per_call_backend
def mse(prediction, target, *, backend=None):
    """mean((prediction - target)^2) over every element, as a Python float."""
    prediction, target = _prediction_and_target(prediction, target)
    return implementation("mse", backend)(prediction, target)


@per_call_backend
def mse_grad(prediction, target, *, backend=None):
    """d mse / d prediction = 2 (prediction - target) / size."""
    prediction, target = _prediction_and_target(prediction, target)
    return implementation("mse_grad", backend)(prediction, target)


@per_call_backend
def binary_crossentropy(prediction, target, *, from_logits=False, backend=None):
    """Mean binary cross-entropy over every element, as a Python float.

    from_logits=False: prediction holds probabilities, clipped to [1e-7, 1 - 1e-7] as Keras does.
    from_logits=True: prediction holds logits; computed as max(z, 0) - z*t + log1p(exp(-|z|)),
    finite for any logit.
    """
    prediction, target = _prediction_and_target(prediction, target)
    op = "binary_crossentropy_logits" if flag("from_logits", from_logits) else "binary_crossentropy"
    return implementation(op, backend)(prediction, target)


@per_call_backend
def binary_crossentropy_grad(prediction, target, *, from_logits=False, backend=None):
    """d binary_crossentropy / d prediction (zero where Keras's clip is active, for probabilities)."""
    prediction, target = _prediction_and_target(prediction, target)
    op = "binary_crossentropy_logits_grad" if flag("from_logits", from_logits) else "binary_crossentropy_grad"
    return implementation(op, backend)(prediction, target)


@per_call_backend
def sgd_update(param, grad, *, lr, backend=None):
    """param -= lr * grad, in place."""
    param = in_place("param", param)   # no silent copy: the caller's own array
    grad = as_float32("grad", grad)
    same_shape("grad", grad, "param", param)
    lr = real_number("lr", lr, low=0.0)
    implementation("sgd_update", backend)(param, grad, lr)


@per_call_backend
def adam_update(param, grad, m, v, *, step, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                backend=None):
    """One Keras Adam step, in place on param, m and v; `step` counts from 1.

    m += (1 - beta_1)(g - m);  v += (1 - beta_2)(g^2 - v)
    param -= lr * sqrt(1 - beta_2^step) / (1 - beta_1^step) * m / (sqrt(v) + epsilon)
    """
    param, m, v = in_place("param", param), in_place("m", m), in_place("v", v)
    grad = as_float32("grad", grad)
    for name, array in (("grad", grad), ("m", m), ("v", v)):
        same_shape(name, array, "param", param)
    for (name, array), (other_name, other) in (((("m", m), ("param", param))), (("v", v), ("param", param)),
                                               (("v", v), ("m", m))):
        if np.may_share_memory(array, other):
            raise ValueError(f"{name}: shares memory with {other_name}; each is updated in place, "
                             f"so they must be separate arrays")
    implementation("adam_update", backend)(param, grad, m, v, *_adam_settings(step, lr, beta_1, beta_2, epsilon))


def _adam_settings(step, lr, beta_1, beta_2, epsilon):
    """(lr, beta_1, beta_2, epsilon, step) checked, as the backends take them; a clear error otherwise."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step: expected an integer >= 1, got {step!r}")
    lr = real_number("lr", lr, low=0.0)
    beta_1 = real_number("beta_1", beta_1, low=0.0, high=1.0)
    beta_2 = real_number("beta_2", beta_2, low=0.0, high=1.0)
    epsilon = real_number("epsilon", epsilon, low=0.0)
    if beta_1 == 1.0 or beta_2 == 1.0:
        raise ValueError("beta_1, beta_2: must be below 1 (the bias correction divides by 1 - beta^step)")
    return lr, beta_1, beta_2, epsilon, int(step)


def dense_adam_update(x, dy, grad, param, m, v, *, step, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                      backend=None):
    """A dense layer's weight and bias gradients and their Adam step, in one pass where the backend
    has one (numba-cpu): weight_and_bias_grad(x, dy, out=grad), then adam_update(param, grad, m, v),
    the same floats. x is (batch, in), dy (batch, out); grad, param, m and v are (in + 1, out)
    float32 C-contiguous arrays, [weight; bias] (a Dense layer's in a flat buffer: pyai.nn.flat),
    grad written and the other three updated in place."""
    x, dy = as_float32("x", x, ndim=2), as_float32("dy", dy, ndim=2)
    if x.shape[0] != dy.shape[0]:
        raise ValueError(f"dy: expected {x.shape[0]} rows, one per row of x {x.shape}, got {dy.shape}")
    shape = (x.shape[1] + 1, dy.shape[1])
    arrays = {name: in_place(name, array) for name, array in (("grad", grad), ("param", param), ("m", m), ("v", v))}
    for name, array in arrays.items():
        if array.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, the weight's rows and then the bias's, got "
                             f"{array.shape}")
    names = list(arrays)
    for i, name in enumerate(names):
        for other in names[i + 1:] + ["x", "dy"]:
            if np.may_share_memory(arrays[name], arrays.get(other, x if other == "x" else dy)):
                raise ValueError(f"{name}: shares memory with {other}; each is read or written on its own, "
                                 f"so they must be separate arrays")
    settings = _adam_settings(step, lr, beta_1, beta_2, epsilon)
    implementation("dense_adam_update", backend)(x, dy, *(array.reshape(-1) for array in arrays.values()), *settings)


# Transformer ops: attention, layer norm, GELU, softmax, cross-entropy, embedding.


def _indices(name, ids, size):
    """`ids` as a C-contiguous int64 array of values in [0, size), or an error naming `name`."""
    ids = plain_array(name, ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an array of integers, got dtype {ids.dtype}")
    if 0 in ids.shape:
        raise ValueError(f"{name}: has an empty dimension (shape {ids.shape}); "
                         f"every dimension must be at least 1")
    outside = (ids < 0) | (ids >= size)
    if outside.any():
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        raise ValueError(f"{name}: expected values in [0, {size}), got {ids[where]} "
                         f"at index {where}")
    return np.asarray(ids, dtype=np.int64, order="C")   # keeps 0-d ids 0-d


def _attention_arguments(q, k, v, causal, scale, convert=as_float32):
    q = convert("q", q, ndim=4)
    k = convert("k", k, ndim=4)
    v = convert("v", v, ndim=4)
    if k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(f"k: expected shape ({q.shape[0]}, {q.shape[1]}, Tk, {q.shape[3]}) to "
                         f"match q's batch, heads and depth (q {q.shape}), got {k.shape}")
    same_shape("v", v, "k", k)
    causal = flag("causal", causal)
    if causal and q.shape[2] > k.shape[2]:
        raise ValueError(f"causal: needs Tq <= Tk, got Tq={q.shape[2]} > Tk={k.shape[2]}; query i "
                         f"sees keys j <= i + Tk - Tq, so the first queries would see no key")
    scale = 1.0 / float(np.sqrt(q.shape[3])) if scale is None else real_number("scale", scale)
    return q, k, v, causal, scale


@per_call_backend
def attention(q, k, v, *, causal=False, scale=None, return_lse=False, backend=None):
    """softmax(scale q k^T + mask) v per batch and head, without forming the Tq x Tk scores.

    q is (B, H, Tq, D), k and v (B, H, Tk, D); scale defaults to 1/sqrt(D). causal: query i
    sees key j iff j <= i + (Tk - Tq) (aligned bottom-right; Tq > Tk is an error). Returns o
    (B, H, Tq, D), or (o, lse) with lse (B, H, Tq) = log sum_j exp(scale q_i.k_j) over the keys
    query i sees, which attention_grad needs.

    On the cuda backend q, k and v may instead all be bfloat16 numpy arrays (ml_dtypes.bfloat16):
    the tensor-core kernel then returns o as bfloat16 (the inputs' precision; it sums in float32)
    and lse as float32 (a statistic attention_grad needs at full precision); other backends raise
    TypeError for bfloat16 inputs.
    """
    convert = _attention_dtype(q, k, v)
    q, k, v, causal, scale = _attention_arguments(q, k, v, causal, scale, convert)
    return_lse = flag("return_lse", return_lse)
    o, lse = implementation("attention", backend)(q, k, v, causal, scale)
    return (o, lse) if return_lse else o


def _attention_dtype(*arrays):
    """as_bfloat16 if any of the arrays is bfloat16 (and the backend takes it), else as_float32."""
    if not any(is_bfloat16(x) for x in arrays):
        return as_float32
    if not takes_bfloat16_attention():
        raise TypeError(f"q, k, v: bfloat16 inputs are taken by the cuda backend only; backend {get_backend()!r} "
                        f"takes float32 (pass q.astype(np.float32), and the others alike)")
    return as_bfloat16


@per_call_backend
def attention_grad(do, q, k, v, o, lse, *, causal=False, scale=None, backend=None):
    """(dq, dk, dv) of attention from do = d loss / d o, and the forward's o and lse. On the cuda
    backend do, q, k, v and o may all be bfloat16 (lse stays float32): dq, dk, dv are bfloat16."""
    convert = _attention_dtype(do, q, k, v, o)
    q, k, v, causal, scale = _attention_arguments(q, k, v, causal, scale, convert)
    do = convert("do", do)
    same_shape("do", do, "q", q)
    o = convert("o", o)
    same_shape("o", o, "q", q)
    lse = as_float32("lse", lse)
    if lse.shape != q.shape[:3]:
        raise ValueError(f"lse: expected shape {q.shape[:3]} (q's B, H, Tq), got {lse.shape}")
    return implementation("attention_grad", backend)(do, q, k, v, o, lse, causal, scale)


def _qkv_arguments(qkv, causal, scale):
    qkv = as_float32("qkv", qkv, ndim=5)
    if qkv.shape[2] != 3:
        raise ValueError(f"qkv: expected shape (B, T, 3, H, D): q, k and v side by side per token, "
                         f"got {qkv.shape}")
    scale = 1.0 / float(np.sqrt(qkv.shape[4])) if scale is None else real_number("scale", scale)
    return qkv, flag("causal", causal), scale


@per_call_backend
def attention_qkv(qkv, *, causal=False, scale=None, return_lse=False, backend=None):
    """attention(q, k, v) over one projection's output, read where it lies: qkv (B, T, 3, H, D)
    holds each token's q, k and v side by side (x @ [Wq Wk Wv] reshaped), so q is
    qkv[:, :, 0].transpose(0, 2, 1, 3). Returns o (B, T, H, D), the heads already merged into
    (B * T, H * D) rows for the output projection, or (o, lse) with lse (B, H, T) as in
    `attention`. Backends without the strided kernels raise NotImplementedError: split the heads
    and call `attention` there."""
    qkv, causal, scale = _qkv_arguments(qkv, causal, scale)
    return_lse = flag("return_lse", return_lse)
    o, lse = implementation("attention_qkv", backend)(qkv, causal, scale)
    return (o, lse) if return_lse else o


@per_call_backend
def attention_qkv_grad(do, qkv, o, lse, *, causal=False, scale=None, backend=None):
    """dqkv (B, T, 3, H, D), dq, dk and dv side by side as q, k, v are in qkv, from do = d loss
    / d o and the forward's o (both (B, T, H, D)) and lse (B, H, T)."""
    qkv, causal, scale = _qkv_arguments(qkv, causal, scale)
    batch, time, _, heads, depth = qkv.shape
    do, o = as_float32("do", do), as_float32("o", o)
    for name, array in (("do", do), ("o", o)):
        if array.shape != (batch, time, heads, depth):
            raise ValueError(f"{name}: expected shape {(batch, time, heads, depth)} (qkv's B, T, H, D), "
                             f"got {array.shape}")
    lse = as_float32("lse", lse)
    if lse.shape != (batch, heads, time):
        raise ValueError(f"lse: expected shape {(batch, heads, time)} (qkv's B, H, T), got {lse.shape}")
    return implementation("attention_qkv_grad", backend)(do, qkv, o, lse, causal, scale)


def _row_parameter(name, array, x):
    array = as_float32(name, array, ndim=1)
    if array.shape != x.shape[-1:]:
        raise ValueError(f"{name}: expected shape {x.shape[-1:]} to match x's last dimension, "
                         f"got {array.shape}")
    return array


@per_call_backend
def layer_norm(x, gamma, beta, *, epsilon=1e-5, return_stats=False, backend=None):
    """(x - mean) / sqrt(var + epsilon) * gamma + beta over the last axis of x (Keras
    LayerNormalization, whose default epsilon is 1e-3). return_stats: (y, mean, rstd), with
    mean and rstd = 1/sqrt(var + epsilon) of shape x.shape[:-1], for layer_norm_grad."""
    x = as_float32("x", x, min_ndim=1)
    gamma, beta = _row_parameter("gamma", gamma, x), _row_parameter("beta", beta, x)
    epsilon = real_number("epsilon", epsilon, low=0.0, low_open=True)
    return_stats = flag("return_stats", return_stats)
    y, mean, rstd = implementation("layer_norm", backend)(x, gamma, beta, epsilon)
    return (y, mean, rstd) if return_stats else y


@per_call_backend
def layer_norm_grad(dy, x, gamma, mean, rstd, *, residual=None, backend=None):
    """(dx, dgamma, dbeta) from dy, x, gamma and the forward's mean and rstd. residual: a
    gradient of x's shape added to dx as it is written (a pre-norm block's h = x + f(ln(x)) has
    dx = dh + ln's dx), the floats of dx and then the float32 add; numba-cpu only."""
    dy, x = as_float32("dy", dy, min_ndim=1), as_float32("x", x, min_ndim=1)
    same_shape("dy", dy, "x", x)
    gamma = _row_parameter("gamma", gamma, x)
    for name, stat in (("mean", mean), ("rstd", rstd)):
        shape = tuple(getattr(stat, "shape", np.shape(stat)))
        if shape != x.shape[:-1]:
            raise ValueError(f"{name}: expected shape {x.shape[:-1]} (x without its last axis), "
                             f"got {shape}")
    mean, rstd = as_float32("mean", mean), as_float32("rstd", rstd)   # 0-d (x 1-d) comes back 1-d
    if residual is None:
        return implementation("layer_norm_grad", backend)(dy, x, gamma, mean, rstd)
    residual = as_float32("residual", residual)
    same_shape("residual", residual, "x", x)
    if not implements("layer_norm_grad_residual"):
        raise NotImplementedError(f"residual: adding it to dx is not implemented on backend {get_backend()!r}")
    return implementation("layer_norm_grad_residual", backend)(dy, x, gamma, mean, rstd, residual)


@per_call_backend
def gelu(x, *, return_derivative=False, backend=None):
    """x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2: GELU's tanh approximation (GPT-2's).
    With return_derivative=True, (y, gelu'(x)): a layer that keeps the derivative instead of x
    has dx = dy * gelu'(x) (matmul's `times`), the floats of gelu_grad(dy, x) without its exp; in
    one pass with y where the backend has one, else by gelu_grad."""
    x = as_float32("x", x)
    if not flag("return_derivative", return_derivative):
        return implementation("gelu", backend)(x)
    if implements("gelu_with_derivative"):
        return implementation("gelu_with_derivative", backend)(x)
    ones = np.ones(np.shape(x), np.float32)
    ones = device.to_device(ones) if device.is_device_array(x) else ones
    return implementation("gelu", backend)(x), implementation("gelu_grad", backend)(ones, x)


@per_call_backend
def gelu_grad(dy, x, *, backend=None):
    """dx = dy * gelu'(x)."""
    dy, x = as_float32("dy", dy), as_float32("x", x)
    same_shape("dy", dy, "x", x)
    return implementation("gelu_grad", backend)(dy, x)


@per_call_backend
def bias_grad(dy, *, backend=None):
    """db = dy summed over every axis but the last, (C,): the bias gradient of a dense layer
    (dy (batch, C)) or of a convolution (dy (N, H, W, C))."""
    return implementation("bias_grad", backend)(as_float32("dy", dy, min_ndim=1))


@per_call_backend
def weight_and_bias_grad(x, dy, *, out=None, backend=None):
    """(dweight, dbias) of a dense layer y = x @ w + b from dy = d loss / d y: x^T dy (in, out)
    and dy summed over its rows (out,), from one product (numba-cpu: the sums are its last row,
    as if x had one more column, of ones). x is (batch, in), dy (batch, out), float32. Both are
    views of one (in + 1, out) array: a new one, or `out`, a C-contiguous float32 numpy array of
    that shape written in place (a dense layer's weight and bias gradients back to back in a flat
    gradient buffer)."""
    x, dy = as_float32("x", x, ndim=2), as_float32("dy", dy, ndim=2)
    if x.shape[0] != dy.shape[0]:
        raise ValueError(f"dy: expected {x.shape[0]} rows, one per row of x {x.shape}, got {dy.shape}")
    if out is None:
        grads = implementation("weight_and_bias_grad", backend)(x, dy)
    else:
        shape = (x.shape[1] + 1, dy.shape[1])
        target = in_place("out", out)
        if target.shape != shape:
            raise ValueError(f"out: expected shape {shape}, the weight gradient's and then the bias "
                             f"gradient's row, got {target.shape}")
        if any(np.may_share_memory(target, array) for array in (x, dy)):
            raise ValueError("out: shares memory with x or dy, which the product still reads")
        implementation("weight_and_bias_grad", backend)(x, dy, target)
        grads = out
    return grads[:-1], grads[-1]


@per_call_backend
def softmax(x, *, backend=None):
    """exp(x) / sum(exp(x)) over the last axis, finite for any finite x."""
    return implementation("softmax", backend)(as_float32("x", x, min_ndim=1))


@per_call_backend
def softmax_cross_entropy(logits, targets, *, backend=None):
    """(loss, dlogits): the mean over rows of -log softmax(logits)[row, target], as a Python
    float, and its gradient d loss / d logits (N, V). logits is (N, V), targets (N,) integers
    in [0, V). Finite for any finite logits."""
    logits = as_float32("logits", logits, ndim=2)
    targets = _indices("targets", targets, logits.shape[1])
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets: expected shape {logits.shape[:1]} (one per row of logits), "
                         f"got {targets.shape}")
    return implementation("softmax_cross_entropy", backend)(logits, targets)


@per_call_backend
def embedding(ids, table, *, backend=None):
    """table[ids]: rows of table (V, C) for integer ids in [0, V); shape ids.shape + (C,)."""
    table = as_float32("table", table, ndim=2)
    ids = _indices("ids", ids, table.shape[0])
    return implementation("embedding", backend)(ids, table)


@per_call_backend
def embedding_grad(dout, ids, vocab_size, *, backend=None):
    """dtable (vocab_size, C): dout's rows added into the rows their ids name (repeats add up)."""
    vocab_size = positive_int("vocab_size", vocab_size)
    ids = _indices("ids", ids, vocab_size)
    dout = as_float32("dout", dout, min_ndim=1)
    if dout.shape[:-1] != ids.shape:
        raise ValueError(f"dout: expected shape {ids.shape} + (C,) to match ids, got {dout.shape}")
    return implementation("embedding_grad", backend)(dout, ids, vocab_size)


# Convolutions: Conv2D and Conv2DTranspose, NHWC, with Keras's weight layouts and output sizes.


def _stride(stride):
    """(sh, sw) from an int or a pair of positive ints."""
    pair = (stride, stride) if isinstance(stride, numbers.Integral) else stride
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(
            isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value >= 1
            for value in pair):
        raise ValueError(f"stride: expected a positive integer or a pair of them, got {stride!r}")
    return int(pair[0]), int(pair[1])


def _padding(padding):
    if not isinstance(padding, str) or padding.lower() not in PADDINGS:
        raise ValueError(f"padding: expected one of {PADDINGS}, got {padding!r}")
    return padding.lower()


def _conv_arguments(x, w, stride, padding, transpose):
    """x (N, H, W, C) and w (Conv2D's (kh, kw, C, O) or Conv2DTranspose's (kh, kw, O, C)) checked
    against each other; (x, w, stride, padding, output shape)."""
    x = as_float32("x", x, ndim=4)
    w = as_float32("w", w, ndim=4)
    stride, padding = _stride(stride), _padding(padding)
    in_axis, layout = (3, "(kh, kw, out, in)") if transpose else (2, "(kh, kw, in, out)")
    if w.shape[in_axis] != x.shape[3]:
        raise ValueError(f"w: expected {x.shape[3]} input channels in dimension {in_axis} (layout "
                         f"{layout}) to match x's last dimension, got shape {w.shape}")
    (_, height, width, _), kernel = x.shape, w.shape[:2]
    if not transpose and padding == "valid" and (kernel[0] > height or kernel[1] > width):
        raise ValueError(f"w: a {kernel[0]}x{kernel[1]} kernel does not fit x's {height}x{width} images "
                         f"with padding='valid'")
    size = conv_transpose_output_size if transpose else conv_output_size
    out_shape = (x.shape[0], size(height, kernel[0], stride[0], padding),
                 size(width, kernel[1], stride[1], padding), w.shape[5 - in_axis])
    return x, w, stride, padding, out_shape


def _conv(op, x, w, b, stride, padding, activation, alpha, backend, transpose):
    x, w, stride, padding, out_shape = _conv_arguments(x, w, stride, padding, transpose)
    if b is not None:
        b = as_float32("b", b, ndim=1)
        if b.shape[0] != out_shape[3]:
            raise ValueError(f"b: expected shape ({out_shape[3]},) to match w's output channels, got {b.shape}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    alpha = real_number("alpha", alpha, low=0.0)
    return implementation(op, backend)(x, w, b, stride, padding, activation, alpha)


def _conv_grad(op, dy, x, w, stride, padding, input_gradient, weight_gradient, backend, transpose):
    x, w, stride, padding, out_shape = _conv_arguments(x, w, stride, padding, transpose)
    dy = as_float32("dy", dy, ndim=4)
    if dy.shape != out_shape:
        raise ValueError(f"dy: expected the forward output's shape {out_shape}, got {dy.shape}")
    input_gradient = flag("input_gradient", input_gradient)
    weight_gradient = flag("weight_gradient", weight_gradient)
    return implementation(op, backend)(dy, x, w, stride, padding, input_gradient, weight_gradient)


@per_call_backend
def conv2d(x, w, b=None, *, stride=1, padding="same", activation=None, alpha=0.2, backend=None):
    """activation(Conv2D(x, w) + b), the bias and activation fused, as Keras's Conv2D computes it.

    x is (N, H, W, C) (channels last); w is (kh, kw, C, O), a Keras Conv2D kernel; b is (O,) or
    None; stride an int or (sh, sw); padding "same" (OH = ceil(H / sh)) or "valid"
    (OH = (H - kh) // sh + 1, so the kernel must fit); activation and alpha as for `linear`.
    Returns (N, OH, OW, O).
    """
    return _conv("conv2d", x, w, b, stride, padding, activation, alpha, backend, transpose=False)


@per_call_backend
def conv2d_grad(dy, x, w, *, stride=1, padding="same", input_gradient=True, weight_gradient=True,
                backend=None):
    """(dx, dw, db) of Conv2D(x, w) + b from dy = d loss / d (that sum), (N, OH, OW, O): apply an
    activation's gradient to dy first. input_gradient=False or weight_gradient=False skip dx or
    (dw, db), which come back None."""
    return _conv_grad("conv2d_grad", dy, x, w, stride, padding, input_gradient, weight_gradient,
                      backend, transpose=False)


@per_call_backend
def conv2d_transpose(x, w, b=None, *, stride=1, padding="same", activation=None, alpha=0.2, backend=None):
    """activation(Conv2DTranspose(x, w) + b), as Keras's Conv2DTranspose computes it (no output_padding).

    x is (N, H, W, C); w is (kh, kw, O, C), a Keras Conv2DTranspose kernel; b is (O,) or None;
    padding "same" (OH = H * sh) or "valid" (OH = H * sh + max(kh - sh, 0)). Returns (N, OH, OW, O).
    """
    return _conv("conv2d_transpose", x, w, b, stride, padding, activation, alpha, backend, transpose=True)


@per_call_backend
def conv2d_transpose_grad(dy, x, w, *, stride=1, padding="same", input_gradient=True,
                          weight_gradient=True, backend=None):
    """(dx, dw, db) of Conv2DTranspose(x, w) + b from dy = d loss / d (that sum), as conv2d_grad."""
    return _conv_grad("conv2d_transpose_grad", dy, x, w, stride, padding, input_gradient,
                      weight_gradient, backend, transpose=True)
