"""Leaky ReLU, forward and backward, on the GPU (numba.cuda), float32 device arrays of any shape.

    forward:  y  = x        where x > 0,  alpha * x   elsewhere
    backward: dx = dy       where x > 0,  alpha * dy  elsewhere (slope alpha at x == 0, as in TF)

Cost per element: 1 FLOP; forward moves 8 bytes, backward 12: memory-bound, so the goal is the
speed of a device-to-device copy of the same bytes.

Fast version: a grid-stride loop over the flat arrays. Neighbouring threads touch neighbouring
elements (coalesced), and the grid is capped at MAX_BLOCKS so that for large arrays each thread
handles several elements and the launch stays small. alpha is a float32, so the product rounds
as TensorFlow's float32 `alpha * x`. The plain references are the CPU kernel's numpy ones.
"""

import numpy as np
from numba import cuda

from pyai.kernels.numba_cpu.leaky_relu import (leaky_relu_backward_reference,  # noqa: F401  (the references)
                                     leaky_relu_forward_reference)
from pyai.kernels.numba_cuda.buffers import device_array
from pyai.kernels.numba_cuda import THREADS, grid_size


@cuda.jit
def leaky_relu_forward_kernel(x, alpha, y):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = x[i] if x[i] > 0 else alpha * x[i]


@cuda.jit
def leaky_relu_backward_kernel(dy, x, alpha, dx):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = dy[i] if x[i] > 0 else alpha * dy[i]


# x: float32 device array, any shape, C-contiguous -> y, a new device array of x's shape
def leaky_relu_forward(x, alpha):
    y = device_array(x.shape, np.float32)
    leaky_relu_forward_kernel[grid_size(x.size), THREADS](x.reshape(-1), np.float32(alpha),
                                                          y.reshape(-1))
    return y


# dy, x: float32 device arrays of one shape -> dx, a new device array of that shape
def leaky_relu_backward(dy, x, alpha):
    dx = device_array(x.shape, np.float32)
    leaky_relu_backward_kernel[grid_size(x.size), THREADS](dy.reshape(-1), x.reshape(-1),
                                                           np.float32(alpha), dx.reshape(-1))
    return dx
