"""GELU with the tanh approximation (GPT-2's; Keras `gelu(approximate=True)`), forward and
backward, on float32 arrays of any shape (worked on as flat arrays).

    u  = sqrt(2/pi) (x + 0.044715 x^3)
    y  = x (1 + tanh u) / 2  =  x s,         s = sigmoid(2u)
    dx = dy (s + 2 x s (1 - s) u'),          u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
The sigmoid form is the same function ((1 + tanh u) / 2 = sigmoid(2u)) with one exp instead of a
tanh. With e = exp(-|2u|) = 2^-(|2u| log2 e), which lies in (0, 1] and never overflows,
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
is no second exp. The floats are gelu_backward's, bit for bit: the same passes serve both
(chunk_exps, gelu_from_exp), and gelu_scalar (the matmul epilogue's) takes the same steps.

Fast version: parallel chunks of CHUNK floats, each in three passes that LLVM vectorizes:
|2u| log2(e) (the constants carry the log2 e), its exp as a power of two (sigmoid.exp2_negative:
2^-a), then the rest. In one pass each vector's chain of ~45 dependent operations (~90 cycles)
filled the core's window of operations in flight with two or three vectors, so the FP units sat
waiting (30 cycles a vector of 8 on an AMD EPYC Zen 3 core); the passes' shorter chains keep them
busy: 1M elements with the derivative 1.25 -> 0.65 ms on one core, 0.63 -> 0.35 ms on two.
error_model="numpy" drops the divide-by-zero check, so the loops vectorize; simd.wide_vectors
lets them use the full vector width (on an AVX-512 core LLVM otherwise stops at 256 bits: 1M
elements forward 0.78 -> 0.57 ms, backward 0.88 -> 0.67 ms on one core, in one pass).
"""

import functools
import math

import numba
import numpy as np

from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.first_call import COSTLY_ELEMENTS, BySize
from pyai.kernels.numba_cpu.sigmoid import LOG2_OF_E, exp2_negative
from pyai.kernels.numba_cpu.simd import wide_vectors

# 2u log2(e) = x (LINEAR + CUBIC x^2): the exp's argument in base-2 units
LINEAR = np.float32(2 * LOG2_OF_E * math.sqrt(2 / math.pi))
CUBIC = np.float32(2 * LOG2_OF_E * math.sqrt(2 / math.pi) * 0.044715)
# u' = SLOPE_0 + SLOPE_2 x^2
SLOPE_0 = np.float32(math.sqrt(2 / math.pi))
SLOPE_2 = np.float32(math.sqrt(2 / math.pi) * 3 * 0.044715)
FASTMATH = {"contract"}
CHUNK = 512   # floats a pass takes before the next: each pass's input and output stay in L1
              # (1M elements on one core: 512 0.74 ms, 1024 0.77, 2048 0.82, 4096 0.81)


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
def exponent(x):
    """|2u| log2(e) of one float32 x: exp(-|2u|) = 2^-exponent(x)."""
    return abs(x * (LINEAR + CUBIC * x * x))


@numba.njit(inline="always", fastmath=FASTMATH, error_model="numpy", cache=True)
def gelu_from_exp(x, e):
    """(gelu(x), gelu'(x)) of one float32 from e = exp(-|2u|): s = sigmoid(2u) and s (1 - s),
    without overflow or cancellation (u has x's sign)."""
    inverse = np.float32(1) / (np.float32(1) + e)
    s = inverse if x >= 0 else e * inverse
    du = SLOPE_0 + SLOPE_2 * x * x
    return x * s, s + np.float32(2) * x * (e * inverse * inverse) * du


@numba.njit(inline="always", fastmath=FASTMATH, error_model="numpy", cache=True)
def gelu_scalar(x):
    """gelu(x) of one float32 (the matmul epilogue applies it too)."""
    return gelu_from_exp(x, exp2_negative(exponent(x)))[0]


@numba.njit(inline="always", fastmath=FASTMATH, error_model="numpy", cache=True)
def chunk_exps(x, start, stop, e):
    """e[i - start] = exp(-|2u|) of x[i] for start <= i < stop, in two passes; the rows of x as a
    slice, so that every index is known not to be negative (LLVM vectorizes no loop that might
    wrap one around)."""
    xs = x[start:stop]
    for i in range(xs.size):
        e[i] = exponent(xs[i])
    for i in range(xs.size):
        e[i] = exp2_negative(e[i])
    return xs


@functools.partial(BySize, elements=COSTLY_ELEMENTS)
@numba.njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def gelu_forward_kernel(x, y):
    for c in numba.prange(-(-x.size // CHUNK)):
        wide_vectors()
        start, stop = c * CHUNK, min(c * CHUNK + CHUNK, x.size)
        e = np.empty(CHUNK, np.float32)
        xs, ys = chunk_exps(x, start, stop, e), y[start:stop]
        for i in range(xs.size):
            ys[i] = gelu_from_exp(xs[i], e[i])[0]


@numba.njit(inline="always", fastmath=FASTMATH, error_model="numpy", cache=True)
def chunk_in_place(x, start, stop, e, derivative):
    """x[i], derivative[i] = gelu(x[i]), gelu'(x[i]) for start <= i < stop (the matmul's
    epilogue, on a block of C), from the exps of chunk_exps (e: room for CHUNK floats). One array
    read and written at one index: given the same array as x and as y, a loop of the kernel's
    form ran a float at a time (the vectorized loop's check found them overlapping), 2.2x slower."""
    xs, ds = chunk_exps(x, start, stop, e), derivative[start:stop]
    for i in range(xs.size):
        xs[i], ds[i] = gelu_from_exp(xs[i], e[i])


@functools.partial(BySize, elements=COSTLY_ELEMENTS)
@numba.njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def gelu_forward_derivative_kernel(x, y, derivative):
    for c in numba.prange(-(-x.size // CHUNK)):
        wide_vectors()
        start, stop = c * CHUNK, min(c * CHUNK + CHUNK, x.size)
        e = np.empty(CHUNK, np.float32)
        xs, ys, ds = chunk_exps(x, start, stop, e), y[start:stop], derivative[start:stop]
        for i in range(xs.size):
            ys[i], ds[i] = gelu_from_exp(xs[i], e[i])


@functools.partial(BySize, elements=COSTLY_ELEMENTS)
@numba.njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def gelu_backward_kernel(dy, x, dx):
    for c in numba.prange(-(-x.size // CHUNK)):
        wide_vectors()
        start, stop = c * CHUNK, min(c * CHUNK + CHUNK, x.size)
        e = np.empty(CHUNK, np.float32)
        xs, dys, dxs = chunk_exps(x, start, stop, e), dy[start:stop], dx[start:stop]
        for i in range(xs.size):
            dxs[i] = dys[i] * gelu_from_exp(xs[i], e[i])[1]


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
