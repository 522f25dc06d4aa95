"""What every backend shares, written once.

ACTIVATIONS: the activations a fused matmul epilogue applies, by the integer code every backend
passes to its kernel. cuda_src/matmul.cuh mirrors the codes in its `Activation` enum, and a test
reads that header and checks it against this table.

conv_output_size, conv_transpose_output_size, conv_padding: the spatial sizes of Conv2D and
Conv2DTranspose as Keras computes them, so that every backend's conv kernels agree on them;
Geometry, geometry, transpose_geometry: those sizes, the kernel, stride and padding of one
convolution in one tuple, as the numba-cpu and numba-cuda conv kernels take them.

adam_step_size: Adam's per-step scalar, computed on the host by every backend in float32 the way
Keras does, so a step matches Keras bit for bit whatever runs the elementwise part.
"""

import functools
from typing import NamedTuple

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


class Geometry(NamedTuple):
    """A convolution from a "big" image (N, H, W, C) to a "small" one (N, OH, OW, O) through a
    kh x kw window moved by (sh, sw), pt rows and pl columns of zeros before the image (the rest
    after it): Conv2D's input is the big image, Conv2DTranspose's output is."""

    height: int
    width: int
    channels: int
    out_height: int
    out_width: int
    kernel_height: int
    kernel_width: int
    stride_height: int
    stride_width: int
    pad_top: int
    pad_left: int

    @property
    def depth(self):
        """The columns of cols: kh * kw * C."""
        return self.kernel_height * self.kernel_width * self.channels

    @property
    def windows(self):
        """The rows of cols per image: OH * OW."""
        return self.out_height * self.out_width

    def is_pointwise(self):
        """A 1x1 kernel at stride 1: cols is the image itself."""
        return (self.kernel_height, self.kernel_width, self.stride_height, self.stride_width) == (1, 1, 1, 1)


def geometry(big_shape, kernel_shape, stride, padding):
    """The Geometry of a convolution of big images (H, W, C) by a (kh, kw) kernel."""
    (height, width, channels), (kh, kw), (sh, sw) = big_shape, kernel_shape, stride
    out_height = conv_output_size(height, kh, sh, padding)
    out_width = conv_output_size(width, kw, sw, padding)
    return Geometry(height, width, channels, out_height, out_width, kh, kw, sh, sw,
                    conv_padding(height, out_height, kh, sh), conv_padding(width, out_width, kw, sw))


def transpose_geometry(x_shape, w_shape, stride, padding):
    """The Geometry of the Conv2D whose transpose this is: from y's (OH, OW, O) to x's (H, W)."""
    (_, height, width, _), (kh, kw, out_channels, _) = x_shape, w_shape
    big = (conv_transpose_output_size(height, kh, stride[0], padding),
           conv_transpose_output_size(width, kw, stride[1], padding), out_channels)
    g = geometry(big, (kh, kw), stride, padding)
    assert (g.out_height, g.out_width) == (height, width), (g, x_shape)
    return g
