"""Tanh, forward and backward, on the GPU (numba.cuda), float32 device arrays of any shape.

    forward:  y  = tanh(x)
    backward: dx = dy * (1 - y * y), from the forward output y

Cost per element: forward ~25 FLOPs (libdevice's tanh: an exp and a divide, or a polynomial
near 0), 8 bytes moved (read x, write y); backward 3 FLOPs, 12 bytes (read dy and y, write dx).
Memory-bound on a GPU with fast float64.

The forward computes in float64 (libdevice's tanh) and rounds once: y is within half an ulp of
exact, saturates to exactly -1 and 1 (tanh(+-1000) = +-1) and never overflows; NaN stays NaN.
(The CPU kernel builds tanh from float32 arithmetic it can vectorize, within ~2 ulp.) The
backward is float32, as TensorFlow's; NVVM may turn 1 - y * y into an FMA, which rounds once.

Fast version: a grid-stride loop over the flat arrays (as leaky_relu.py), coalesced, the grid
capped at MAX_BLOCKS. The plain references are the CPU kernel's numpy ones.
"""

import math

import numpy as np
from numba import cuda, float32, float64

from pyai.kernels.numba_cpu.tanh import tanh_backward_reference, tanh_forward_reference  # noqa: F401
from pyai.kernels.numba_cuda.buffers import device_array
from pyai.kernels.numba_cuda import THREADS, grid_size


@cuda.jit
def tanh_forward_kernel(x, y):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = float32(math.tanh(float64(x[i])))


@cuda.jit
def tanh_backward_kernel(dy, y, dx):
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        dx[i] = dy[i] * (float32(1.0) - y[i] * y[i])


# x: float32 device array, any shape, C-contiguous -> y, a new device array of x's shape
def tanh_forward(x):
    y = device_array(x.shape, np.float32)
    tanh_forward_kernel[grid_size(x.size), THREADS](x.reshape(-1), y.reshape(-1))
    return y


# dy, y: float32 device arrays of one shape -> dx, a new device array of that shape
def tanh_backward(dy, y):
    dx = device_array(y.shape, np.float32)
    tanh_backward_kernel[grid_size(y.size), THREADS](dy.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx
