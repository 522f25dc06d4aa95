"""Tanh, forward and backward, on float32 arrays of any shape (worked on as flat arrays).

    forward:  y  = tanh(x)
    backward: dx = dy * (1 - y * y), from the forward output y

Cost per element: forward ~25 FLOPs (an exp and a divide, or a polynomial), 8 bytes moved (read
x, write y); backward 3 FLOPs, 12 bytes (read dy and y, write dx). Both are meant to run at
memory speed, which the forward reaches only if it vectorizes.

Fast version: libm's tanh is a scalar call (~30 ns an element) that stops LLVM from vectorizing,
so the forward is built from SIMD-friendly float32 arithmetic, both branches computed and one
selected (no jumps in the loop):
    |x| >= SMALL:  tanh|x| = (1 - e) / (1 + e),  e = exp(-2|x|)  (`exp_negative`, see sigmoid.py)
    |x| <  SMALL:  tanh x  = x (1 - x^2/3 + 2x^4/15 - ...), Taylor to x^13, where 1 - e would
                   cancel; at |x| < 0.4 the truncation is below half an ulp.
y is within ~2 ulp of exact; it saturates to exactly -1 and 1 (tanh(+-1000) = +-1, as in
TensorFlow) and never overflows; NaN stays NaN.
"""

import functools

import numba
import numpy as np

from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.first_call import COSTLY_ELEMENTS, BySize
from pyai.kernels.numba_cpu.sigmoid import exp_negative   # numba's cache of this file misses edits to it
from pyai.kernels.numba_cpu.simd import wide_vectors

SMALL = np.float32(0.4)
TAYLOR = tuple(np.float32(c) for c in (1, -1 / 3, 2 / 15, -17 / 315, 62 / 2835, -1382 / 155925,
                                       21844 / 6081075))   # tanh(x) / x in powers of x^2


def tanh_forward_reference(x):
    return np.tanh(x.astype(np.float64)).astype(np.float32)


def tanh_backward_reference(dy, y):
    return dy * (1 - y * y)


@numba.njit(inline="always", error_model="numpy", fastmath={"contract"}, cache=True)
def tanh_scalar(x):
    """tanh of one float32 (the matmul epilogue applies it too)."""
    c = TAYLOR
    u = x * x
    series = x * (c[0] + u * (c[1] + u * (c[2] + u * (c[3] + u * (c[4] + u * (c[5] + u * c[6]))))))
    e = exp_negative(np.float32(2) * abs(x))
    ratio = (np.float32(1) - e) / (np.float32(1) + e)
    signed_ratio = ratio if x >= 0 else -ratio
    return series if abs(x) < SMALL else signed_ratio


@functools.partial(BySize, elements=COSTLY_ELEMENTS)
@numba.njit(parallel=True, error_model="numpy", fastmath={"contract"}, cache=True)
def tanh_forward_kernel(x, y):
    for i in numba.prange(x.size):
        wide_vectors()
        y[i] = tanh_scalar(x[i])


@BySize
@numba.njit(parallel=True, cache=True)
def tanh_backward_kernel(dy, y, dx):
    for i in numba.prange(y.size):
        dx[i] = dy[i] * (np.float32(1) - y[i] * y[i])


# x, y: float32, any shape, C-contiguous
def tanh_forward(x):
    y = memory.empty_like(x)
    tanh_forward_kernel(x.reshape(-1), y.reshape(-1))
    return y


# dy, y, dx: float32, the same shape, C-contiguous
def tanh_backward(dy, y):
    dx = memory.empty_like(y)
    tanh_backward_kernel(dy.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx
