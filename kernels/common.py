"""What every backend shares, written once.

ACTIVATIONS: the activations a fused matmul epilogue applies, by the integer code every backend
passes to its kernel. cuda_src/matmul.cuh mirrors the codes in its `Activation` enum, and a test
reads that header and checks it against this table.

conv_output_size, conv_transpose_output_size, conv_padding: the spatial sizes of Conv2D and
Conv2DTranspose as Keras computes them, so that every backend's conv kernels agree on them.

adam_step_size: Adam's per-step scalar, computed on the host by every backend in float32 the way
Keras does, so a step matches Keras bit for bit whatever runs the elementwise part.
"""

import functools

import numpy as np

ACTIVATIONS = {None: 0, "leaky_relu": 1, "relu": 2, "sigmoid": 3, "tanh": 4, "gelu": 5}


def activation_reference(y, activation, alpha=0.2):
    """The epilogue in float64, for tests: activation(y) of a float64 array."""
    if activation == "leaky_relu":
        return np.where(y > 0, y, alpha * y)
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "sigmoid":
        return np.exp(-np.logaddexp(0, -y))
    if activation == "tanh":
        return np.tanh(y)
    if activation == "gelu":   # tanh approximation, in its sigmoid form (see numba_cpu/gelu.py)
        u = np.sqrt(2 / np.pi) * (y + 0.044715 * y**3)
        return y * np.exp(-np.logaddexp(0, -2 * u))
    return y


@functools.lru_cache(maxsize=64)
def adam_step_size(lr, beta_1, beta_2, step):
    """alpha = lr * sqrt(1 - beta_2^step) / (1 - beta_1^step) in float32, as Keras computes it in
    the variable's dtype. Cached: a step asks for it once for each of its layers (numpy's scalar
    arithmetic, ~3 us a call)."""
    one, step = np.float32(1), np.float32(step)
    beta_1_power = np.float32(beta_1) ** step
    beta_2_power = np.float32(beta_2) ** step
    return np.float32(lr) * np.sqrt(one - beta_2_power) / (one - beta_1_power)


PADDINGS = ("same", "valid")


def conv_output_size(size, kernel, stride, padding):
    """Keras Conv2D along one axis: ceil(size / stride) for 'same', (size - kernel) // stride + 1
    for 'valid' (which needs kernel <= size)."""
    return -(-size // stride) if padding == "same" else (size - kernel) // stride + 1


def conv_transpose_output_size(size, kernel, stride, padding):
    """Keras Conv2DTranspose along one axis (no output_padding): size * stride for 'same',
    size * stride + max(kernel - stride, 0) for 'valid'."""
    return size * stride + (0 if padding == "same" else max(kernel - stride, 0))


def conv_padding(size, out_size, kernel, stride):
    """The zeros before the first row of a convolution from `size` rows to `out_size` (TensorFlow's
    'same': half the total padding, the odd one after); 0 for 'valid'."""
    return max((out_size - 1) * stride + kernel - size, 0) // 2
