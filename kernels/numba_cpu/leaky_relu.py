"""Leaky ReLU, forward and backward, on float32 arrays of any shape (worked on as flat arrays).

    forward:  y  = x        where x > 0,  alpha * x   elsewhere
    backward: dx = dy       where x > 0,  alpha * dy  elsewhere (slope alpha at x == 0, as in TF)

Cost per element: 1 FLOP; forward moves 8 bytes (read x, write y), backward 12 bytes (read dy
and x, write dx). That is far below any CPU's FLOPs per byte, so both are memory-bound: the goal
is to run at the speed of a memory copy of the same bytes.

Fast version: one pass over the flat array, cut into contiguous chunks across threads by
numba.prange (on one thread below first_call.PARALLEL_ELEMENTS elements). The body is a compare and a select, which LLVM turns into SIMD blends, so each
thread streams its chunk at memory bandwidth. alpha is cast to float32 once, so the product is
rounded exactly as TensorFlow's float32 `alpha * x` (and stays in float32 SIMD lanes).
"""

import numba
import numpy as np

from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.first_call import BySize


def leaky_relu_forward_reference(x, alpha):
    return np.where(x > 0, x, np.float32(alpha) * x)


def leaky_relu_backward_reference(dy, x, alpha):
    return np.where(x > 0, dy, np.float32(alpha) * dy)


@BySize
@numba.njit(parallel=True, cache=True)
def leaky_relu_forward_kernel(x, alpha, y):
    for i in numba.prange(x.size):
        y[i] = x[i] if x[i] > 0 else alpha * x[i]


@BySize
@numba.njit(parallel=True, cache=True)
def leaky_relu_backward_kernel(dy, x, alpha, dx):
    for i in numba.prange(x.size):
        dx[i] = dy[i] if x[i] > 0 else alpha * dy[i]


# x, y: float32, any shape, C-contiguous
def leaky_relu_forward(x, alpha):
    y = memory.empty_like(x)
    leaky_relu_forward_kernel(x.reshape(-1), np.float32(alpha), y.reshape(-1))
    return y


# dy, x, dx: float32, the same shape, C-contiguous
def leaky_relu_backward(dy, x, alpha):
    dx = memory.empty_like(x)
    leaky_relu_backward_kernel(dy.reshape(-1), x.reshape(-1), np.float32(alpha), dx.reshape(-1))
    return dx


def leaky_relu_gradient_in_place(dy, y, alpha):
    """dy = leaky_relu_backward(dy, y, alpha), in place: the same floats, for a product whose own
    loops cannot apply it (conv2d_transpose.transposed_conv)."""
    leaky_relu_backward_kernel(dy.reshape(-1), y.reshape(-1), np.float32(alpha), dy.reshape(-1))
