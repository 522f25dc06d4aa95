"""pyai's public ops: pure functions on numpy float32 arrays.

Each op checks its arguments once (see `pyai.checks` for the documented conversions and errors),
then calls the function that implements it on the chosen backend (`pyai.dispatch`). Every op takes
`backend=None` as a keyword: None means the current backend (`pyai.set_backend`, `pyai.use_backend`).
"""

import numpy as np

from pyai.checks import as_float32, real_number, same_shape
from pyai.dispatch import implementation

ACTIVATIONS = (None, "leaky_relu", "relu", "sigmoid", "tanh")


def matmul(a, b, *, transpose_a=False, transpose_b=False, backend=None):
    """op(a) @ op(b) for 2-d arrays, where op transposes when asked. Returns (M, N) float32."""
    a = as_float32("a", a, ndim=2)
    b = as_float32("b", b, ndim=2)
    k_a = a.shape[0] if transpose_a else a.shape[1]
    k_b = b.shape[1] if transpose_b else b.shape[0]
    if k_a != k_b:
        raise ValueError(f"b: inner dimensions differ: op(a) has {k_a} columns, op(b) has {k_b} rows "
                         f"(a {a.shape}, transpose_a={transpose_a}; b {b.shape}, transpose_b={transpose_b})")
    return implementation("matmul", backend)(a, b, bool(transpose_a), bool(transpose_b))


def linear(x, w, b=None, *, activation=None, alpha=0.2, backend=None):
    """activation(x @ w + b) in one fused kernel; `w` is (in, out) like a Keras Dense kernel.

    x is (batch, in) or (in,); b is (out,) or None; activation is one of None, "leaky_relu",
    "relu", "sigmoid", "tanh"; alpha is leaky_relu's negative slope (>= 0, so that the sign of
    the output tells the sign of the input, which `pyai.nn.Dense.backward` relies on).
    """
    x = as_float32("x", x, min_ndim=1)
    if x.ndim > 2:
        raise ValueError(f"x: expected a 1-d or 2-d array, got shape {x.shape}")
    w = as_float32("w", w, ndim=2)
    if x.shape[-1] != w.shape[0]:
        raise ValueError(f"w: expected {x.shape[-1]} rows to match x's last dimension, got shape {w.shape}")
    if b is not None:
        b = as_float32("b", b, ndim=1)
        if b.shape[0] != w.shape[1]:
            raise ValueError(f"b: expected shape ({w.shape[1]},) to match w's columns, got {b.shape}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    alpha = real_number("alpha", alpha, low=0.0)
    y = implementation("linear", backend)(np.atleast_2d(x), w, b, activation, alpha)
    return y[0] if x.ndim == 1 else y


def leaky_relu(x, alpha=0.2, *, backend=None):
    """x where x > 0, alpha * x elsewhere."""
    x = as_float32("x", x)
    alpha = real_number("alpha", alpha)
    return implementation("leaky_relu", backend)(x, alpha)


def leaky_relu_grad(dy, x, alpha=0.2, *, backend=None):
    """dx = dy where x > 0, alpha * dy elsewhere (at x == 0 the slope is alpha, as in TensorFlow)."""
    dy = as_float32("dy", dy)
    x = as_float32("x", x)
    same_shape("dy", dy, "x", x)
    alpha = real_number("alpha", alpha)
    return implementation("leaky_relu_grad", backend)(dy, x, alpha)


def relu(x, *, backend=None):
    """max(x, 0)."""
    return implementation("relu", backend)(as_float32("x", x))


def relu_grad(dy, x, *, backend=None):
    """dx = dy where x > 0, 0 elsewhere."""
    dy, x = as_float32("dy", dy), as_float32("x", x)
    same_shape("dy", dy, "x", x)
    return implementation("relu_grad", backend)(dy, x)


def sigmoid(x, *, backend=None):
    """1 / (1 + exp(-x)), finite for any finite or infinite x."""
    return implementation("sigmoid", backend)(as_float32("x", x))


def sigmoid_grad(dy, y, *, backend=None):
    """dx = dy * y * (1 - y), from the forward output y."""
    dy, y = as_float32("dy", dy), as_float32("y", y)
    same_shape("dy", dy, "y", y)
    return implementation("sigmoid_grad", backend)(dy, y)


def tanh(x, *, backend=None):
    return implementation("tanh", backend)(as_float32("x", x))


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


def mse(prediction, target, *, backend=None):
    """mean((prediction - target)^2) over every element, as a Python float."""
    prediction, target = _prediction_and_target(prediction, target)
    return implementation("mse", backend)(prediction, target)


def mse_grad(prediction, target, *, backend=None):
    """d mse / d prediction = 2 (prediction - target) / size."""
    prediction, target = _prediction_and_target(prediction, target)
    return implementation("mse_grad", backend)(prediction, target)


def binary_crossentropy(prediction, target, *, from_logits=False, backend=None):
    """Mean binary cross-entropy over every element, as a Python float.

    from_logits=False: prediction holds probabilities, clipped to [1e-7, 1 - 1e-7] as Keras does.
    from_logits=True: prediction holds logits; computed as max(z, 0) - z*t + log1p(exp(-|z|)),
    finite for any logit.
    """
    prediction, target = _prediction_and_target(prediction, target)
    op = "binary_crossentropy_logits" if from_logits else "binary_crossentropy"
    return implementation(op, backend)(prediction, target)


def binary_crossentropy_grad(prediction, target, *, from_logits=False, backend=None):
    """d binary_crossentropy / d prediction (zero where Keras's clip is active, for probabilities)."""
    prediction, target = _prediction_and_target(prediction, target)
    op = "binary_crossentropy_logits_grad" if from_logits else "binary_crossentropy_grad"
    return implementation(op, backend)(prediction, target)


def _parameter(name, array):
    """In-place updates need the caller's own float32 C-contiguous array: no silent copy."""
    if not isinstance(array, np.ndarray) or array.dtype != np.float32 or not array.flags.c_contiguous:
        raise TypeError(f"{name}: updated in place, so it must be a C-contiguous float32 numpy array, "
                        f"got {type(array).__name__} {getattr(array, 'dtype', '')}".rstrip())
    if not array.flags.writeable:
        raise ValueError(f"{name}: updated in place, but the array is read-only")
    if array.size == 0:
        raise ValueError(f"{name}: has an empty dimension (shape {array.shape})")
    return array


def sgd_update(param, grad, *, lr, backend=None):
    """param -= lr * grad, in place."""
    param = _parameter("param", param)
    grad = as_float32("grad", grad)
    same_shape("grad", grad, "param", param)
    lr = real_number("lr", lr, low=0.0)
    implementation("sgd_update", backend)(param, grad, lr)


def adam_update(param, grad, m, v, *, step, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                backend=None):
    """One Keras Adam step, in place on param, m and v; `step` counts from 1.

    m += (1 - beta_1)(g - m);  v += (1 - beta_2)(g^2 - v)
    param -= lr * sqrt(1 - beta_2^step) / (1 - beta_1^step) * m / (sqrt(v) + epsilon)
    """
    param, m, v = _parameter("param", param), _parameter("m", m), _parameter("v", v)
    grad = as_float32("grad", grad)
    for name, array in (("grad", grad), ("m", m), ("v", v)):
        same_shape(name, array, "param", param)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step: expected an integer >= 1, got {step!r}")
    lr = real_number("lr", lr, low=0.0)
    beta_1 = real_number("beta_1", beta_1, low=0.0, high=1.0)
    beta_2 = real_number("beta_2", beta_2, low=0.0, high=1.0)
    epsilon = real_number("epsilon", epsilon, low=0.0)
    if beta_1 == 1.0 or beta_2 == 1.0:
        raise ValueError("beta_1, beta_2: must be below 1 (the bias correction divides by 1 - beta^step)")
    implementation("adam_update", backend)(param, grad, m, v, lr, beta_1, beta_2, epsilon, int(step))
