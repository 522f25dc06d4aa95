"""pyai's kernels inside Keras models (TensorFlow backend): a Dense layer with pyai's fused
epilogue, and attention as a function and a layer, with gradients, usable in model.fit.

    import pyai.keras
    layer = pyai.keras.Dense(64, activation="gelu")          # keras.layers.Dense's kernel and bias
    o = pyai.keras.attention(q, k, v, causal=True)           # q (B, H, Tq, D), k and v (B, H, Tk, D)
    o = pyai.keras.Attention(causal=True)([q, k, v])         # the same, as a layer

Each forward and backward is one `tf.numpy_function` around pyai's kernels, joined by
`tf.custom_gradient`. That is a host round trip: in a traced step (model.fit) TensorFlow leaves
its graph, takes the GIL and hands the tensors to Python as numpy arrays (no copy on the CPU)
for each call, and such a step cannot be compiled by XLA: pyai's layers say so
(`supports_jit = False`, which makes Keras's default `jit_compile="auto"` choose no XLA); a model
that calls `attention` itself needs `compile(jit_compile=False)`. The graph cannot be saved as
a SavedModel (the Python function is not part of it): save the weights instead.
Tensors are float32; the kernels run on pyai's current backend.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from pyai import ops
from pyai.nn.layers import linear_backward, linear_forward


def float32_tensor(name, value):
    value = tf.convert_to_tensor(value)
    if value.dtype != tf.float32:
        raise TypeError(f"{name}: expected a float32 tensor, got {value.dtype.name} (pyai's kernels "
                        f"compute in float32)")
    return value


def call_on_host(function, inputs, shapes):
    """`function` of numpy arrays, run by TensorFlow as one tf.numpy_function: float32 results
    with the given static shapes."""
    results = tf.numpy_function(function, inputs, [tf.float32] * len(shapes), stateful=False)
    for result, shape in zip(results, shapes):
        result.set_shape(shape)
    return results


def linear(x, w, b=None, *, activation=None, alpha=0.2):
    """activation(x @ w + b) on pyai's fused kernel, with its gradients: x (..., in), w (in, out)
    (a Keras Dense kernel), b (out,) or None; activation one of pyai.ops.ACTIVATIONS ("gelu" is
    the tanh approximation, keras.activations.gelu(approximate=True))."""
    x, w = float32_tensor("x", x), float32_tensor("w", w)
    if activation not in ops.ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ops.ACTIVATIONS}, got {activation!r}")
    if w.shape.rank != 2 or x.shape.rank in (None, 0) or x.shape[-1] != w.shape[0]:
        raise ValueError(f"w: expected shape ({x.shape[-1] if x.shape.rank else 'in'}, out) to "
                         f"match x's last dimension (x {x.shape}), got {w.shape}")
    bias = tf.zeros(w.shape[1:], tf.float32) if b is None else float32_tensor("b", b)
    rows = tf.reshape(x, (-1, w.shape[0]))
    y = fused_linear(rows, w, bias, activation, float(alpha), b is not None)
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [w.shape[1]]], axis=0))


def fused_linear(x, w, b, activation, alpha, use_bias):
    # x (N, in), w (in, out), b (out,) -> y (N, out); pre, the pre-activation, for gelu only.
    @tf.custom_gradient
    def forward(x, w, b):
        def host_forward(x, w, b):
            y, pre = linear_forward(x, w, b if use_bias else None, activation, alpha)
            return y, np.empty(0, np.float32) if pre is None else pre

        out = (x.shape[0], w.shape[1])
        y, pre = call_on_host(host_forward, [x, w, b], [out, out if activation == "gelu" else (0,)])

        def backward(dy):
            def host_backward(dy, x, w, y, pre):
                pre = pre if activation == "gelu" else None
                return linear_backward(dy, x, w, y, pre, activation, alpha)

            return call_on_host(host_backward, [dy, x, w, y, pre], [x.shape, w.shape, b.shape])

        return y, backward

    return forward(x, w, b)


def attention(q, k, v, *, causal=False, scale=None):
    """softmax(scale q k^T + mask) v on pyai's flash-style kernels, with its gradients: q
    (B, H, Tq, D), k and v (B, H, Tk, D) (pyai's layout; keras.ops.dot_product_attention takes
    (B, T, H, D)), scale 1/sqrt(D) by default; causal: query i sees keys j <= i + Tk - Tq."""
    q, k, v = float32_tensor("q", q), float32_tensor("k", k), float32_tensor("v", v)
    if q.shape.rank != 4:
        raise ValueError(f"q: expected a 4-d tensor (B, H, Tq, D), got shape {q.shape}")
    causal = bool(causal)
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else float(scale)

    @tf.custom_gradient
    def forward(q, k, v):
        def host_forward(q, k, v):
            return ops.attention(q, k, v, causal=causal, scale=scale, return_lse=True)

        o, lse = call_on_host(host_forward, [q, k, v], [q.shape, q.shape[:3]])

        def backward(do):
            def host_backward(do, q, k, v, o, lse):
                return ops.attention_grad(do, q, k, v, o, lse, causal=causal, scale=scale)

            return call_on_host(host_backward, [do, q, k, v, o, lse], [q.shape, k.shape, v.shape])

        return o, backward

    return forward(q, k, v)


class Dense(keras.layers.Layer):
    """keras.layers.Dense on pyai's fused kernel: the same `kernel` (in, units) and `bias`
    (units,), initialized the same way; activation one of pyai.ops.ACTIVATIONS."""

    def __init__(self, units, activation=None, alpha=0.2, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if activation not in ops.ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ops.ACTIVATIONS}, got {activation!r}")
        self.units, self.activation, self.alpha, self.use_bias = int(units), activation, float(alpha), use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_jit = False   # a tf.numpy_function cannot be compiled by XLA

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer=self.kernel_initializer)
        self.bias = (self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer)
                     if self.use_bias else None)

    def call(self, x):
        return linear(x, self.kernel, self.bias, activation=self.activation, alpha=self.alpha)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "alpha": self.alpha, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}


class Attention(keras.layers.Layer):
    """`attention` as a layer, called on [q, k, v] of shapes (B, H, Tq, D), (B, H, Tk, D)."""

    def __init__(self, causal=False, scale=None, **kwargs):
        super().__init__(**kwargs)
        self.causal, self.scale = bool(causal), scale
        self.supports_jit = False

    def call(self, inputs):
        q, k, v = inputs
        return attention(q, k, v, causal=self.causal, scale=self.scale)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "causal": self.causal, "scale": self.scale}
