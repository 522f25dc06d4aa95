"""ReLU, forward and backward, on float32 arrays of any shape (worked on as flat arrays).

    forward:  y  = max(x, 0)
    backward: dx = dy where x > 0, 0 elsewhere (zero slope at x == 0, as in TensorFlow)

Cost per element: 1 FLOP; forward moves 8 bytes (read x, write y), backward 12 bytes (read dy
and x, write dx): memory-bound, so the goal is the speed of a memory copy of the same bytes.

Fast version: one pass over the flat array, cut into contiguous chunks across threads by
numba.prange; the compare-and-select body vectorizes to SIMD blends. The select is written
`0 if x < 0 else x` so that NaN (and -0.0) pass through unchanged, as in TensorFlow.
"""

import numba
import numpy as np

from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.first_call import BySize


def relu_forward_reference(x):
    return np.maximum(x, np.float32(0))


def relu_backward_reference(dy, x):
    return np.where(x > 0, dy, np.float32(0))


@BySize
@numba.njit(parallel=True, cache=True)
def relu_forward_kernel(x, y):
    for i in numba.prange(x.size):
        y[i] = np.float32(0) if x[i] < 0 else x[i]


@BySize
@numba.njit(parallel=True, cache=True)
def relu_backward_kernel(dy, x, dx):
    for i in numba.prange(x.size):
        dx[i] = dy[i] if x[i] > 0 else np.float32(0)


# x, y: float32, any shape, C-contiguous
def relu_forward(x):
    y = memory.empty_like(x)
    relu_forward_kernel(x.reshape(-1), y.reshape(-1))
    return y


# dy, x, dx: float32, the same shape, C-contiguous
def relu_backward(dy, x):
    dx = memory.empty_like(x)
    relu_backward_kernel(dy.reshape(-1), x.reshape(-1), dx.reshape(-1))
    return dx
