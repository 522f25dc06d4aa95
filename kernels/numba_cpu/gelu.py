"""GELU with the tanh approximation (GPT-2's; Keras `gelu(approximate=True)`), forward and
backward, on float32 arrays of any shape (worked on as flat arrays).

    u  = sqrt(2/pi) (x + 0.044715 x^3)
    y  = x (1 + tanh u) / 2  =  x s,         s = sigmoid(2u)
    dx = dy (s + 2 x s (1 - s) u'),          u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
The sigmoid form is the same function ((1 + tanh u) / 2 = sigmoid(2u)) with one exp instead of a
tanh. With e = exp(-|2u|), which lies in (0, 1] and never overflows,
    s = 1 / (1 + e) for u >= 0, e / (1 + e) for u < 0,    s (1 - s) = e / (1 + e)^2
in both cases: no 1 - s, which would cancel where s is near 1, and no 1 + tanh u, which
cancels where tanh u is near -1 (float32 TensorFlow is 1e-4 off there at x = -3, all wrong
from x = -5 on; this form keeps ~2 |u| ulp, the rounding of u magnified by the exp).
Cost per element: ~25 FLOPs (an exp and a divide); forward 8 bytes moved (read x, write y),
backward 12 (read dy and x, write dx). From L2 the exp and the divide bound it (an AMD EPYC Zen 3
core takes as long for 1M elements there as a memory-bound pass over them from memory).

The forward can also return gelu'(x) itself (`gelu_forward_with_derivative`), made from the same
exp as y for the cost of one more store: a layer that keeps it instead of x has dx = dy gelu'(x),
one multiply an element, which the product that makes dy applies to each block of it while the
block is in L2 (matmul.matmul_times): dy is never stored unmultiplied, nor read back, and there
is no second exp. The floats are gelu_backward's, bit for bit: one expression
(gelu_and_derivative) serves both.

Fast version: one pass over the flat array in parallel chunks (numba.prange); the exp is
sigmoid.exp_negative (SIMD-friendly arithmetic instead of a scalar libm call) and
error_model="numpy" drops the divide-by-zero check, so the loop vectorizes; simd.wide_vectors
lets it use the full vector width (on an AVX-512 core LLVM otherwise stops at 256 bits: 1M
elements forward 0.78 -> 0.57 ms, backward 0.88 -> 0.67 ms on one core).
"""

import functools
import math

import numba
import numpy as np

from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.first_call import COSTLY_ELEMENTS, BySize
from pyai.kernels.numba_cpu.sigmoid import exp_negative
from pyai.kernels.numba_cpu.simd import wide_vectors

SQRT_2_OVER_PI = np.float32(math.sqrt(2 / math.pi))
CUBIC = np.float32(0.044715)
FASTMATH = {"contract"}


def gelu_forward_reference(x):
    """float64, in the sigmoid form: 0.5 x (1 + tanh u) itself cancels to 0 for x < -7."""
    x = x.astype(np.float64)
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    return x * np.exp(-np.logaddexp(0, -2 * u))


def gelu_backward_reference(dy, x):
    x = x.astype(np.float64)
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x**2)
    s = np.exp(-np.logaddexp(0, -2 * u))
    slope = np.exp(-np.logaddexp(0, -2 * u) - np.logaddexp(0, 2 * u))   # s (1 - s)
    return dy * (s + 2 * x * slope * du)


@numba.njit(inline="always", fastmath=FASTMATH, error_model="numpy", cache=True)
def sigmoid_of_twice(u):
    """(sigmoid(2u), sigmoid(2u) (1 - sigmoid(2u))), without overflow or cancellation."""
    e = exp_negative(np.float32(2) * abs(u))
    inverse = np.float32(1) / (np.float32(1) + e)
    s = inverse if u >= 0 else e * inverse
    return s, e * inverse * inverse


@numba.njit(inline="always", fastmath=FASTMATH, error_model="numpy", cache=True)
def gelu_and_derivative(x):
    """(gelu(x), gelu'(x)) of one float32, from one exp."""
    s, slope = sigmoid_of_twice(SQRT_2_OVER_PI * (x + CUBIC * x * x * x))
    du = SQRT_2_OVER_PI * (np.float32(1) + np.float32(3) * CUBIC * x * x)
    return x * s, s + np.float32(2) * x * slope * du


@numba.njit(inline="always", fastmath=FASTMATH, error_model="numpy", cache=True)
def gelu_scalar(x):
    """gelu(x) of one float32 (the matmul epilogue applies it too)."""
    s, _ = sigmoid_of_twice(SQRT_2_OVER_PI * (x + CUBIC * x * x * x))
    return x * s


@functools.partial(BySize, elements=COSTLY_ELEMENTS)
@numba.njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def gelu_forward_kernel(x, y):
    for i in numba.prange(x.size):
        wide_vectors()
        y[i] = gelu_scalar(x[i])


@functools.partial(BySize, elements=COSTLY_ELEMENTS)
@numba.njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def gelu_forward_derivative_kernel(x, y, derivative):
    for i in numba.prange(x.size):
        wide_vectors()
        y[i], derivative[i] = gelu_and_derivative(x[i])


@functools.partial(BySize, elements=COSTLY_ELEMENTS)
@numba.njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def gelu_backward_kernel(dy, x, dx):
    for i in numba.prange(x.size):
        wide_vectors()
        dx[i] = dy[i] * gelu_and_derivative(x[i])[1]


# x, y: float32, any shape, C-contiguous
def gelu_forward(x):
    y = memory.empty_like(x)
    gelu_forward_kernel(x.reshape(-1), y.reshape(-1))
    return y


# x, y, derivative: float32, the same shape, C-contiguous
def gelu_forward_with_derivative(x):
    y, derivative = memory.empty_like(x), memory.empty_like(x)
    gelu_forward_derivative_kernel(x.reshape(-1), y.reshape(-1), derivative.reshape(-1))
    return y, derivative


# dy, x, dx: float32, the same shape, C-contiguous
def gelu_backward(dy, x):
    dx = memory.empty_like(x)
    gelu_backward_kernel(dy.reshape(-1), x.reshape(-1), dx.reshape(-1))
    return dx
