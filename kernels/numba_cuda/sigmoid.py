"""Sigmoid, forward and backward, on the GPU (numba.cuda), float32 device arrays of any shape.

    forward:  y  = 1 / (1 + exp(-x))
    backward: dx = dy * y * (1 - y), from the forward output y

Cost per element: forward ~20 FLOPs (an exp and a divide), 8 bytes moved (read x, write y);
backward 3 FLOPs, 12 bytes (read dy and y, write dx). Memory-bound on a GPU with fast float64.

Stable form, as in the CPU kernel: with e = exp(-|x|), which lies in [0, 1] and never overflows,
    y = 1 / (1 + e)  for x >= 0,    y = e / (1 + e)  for x < 0,
so the limits are exactly 0 and 1 (sigmoid(-1000) = 0, sigmoid(1000) = 1) and NaN stays NaN.
The forward computes in float64 and rounds once, so y is within half an ulp of exact (the CPU
kernel's float32 polynomial is within ~2 ulp); an H100 runs float64 at half its float32 rate,
and one exp and divide an element leave it memory-bound. Small outputs stay subnormal (TF's CPU
kernels flush them to 0; the tests accept either). The backward is float32, as TensorFlow's.

Fast version: a grid-stride loop over the flat arrays (as leaky_relu.py), coalesced, the grid
capped at MAX_BLOCKS. The plain references are the CPU kernel's numpy ones.
"""

import math

import numpy as np
from numba import cuda, float32, float64

from pyai.kernels.numba_cpu.sigmoid import (sigmoid_backward_reference,  # noqa: F401  (the references)
                                            sigmoid_forward_reference)
from pyai.kernels.numba_cuda.buffers import device_array
from pyai.kernels.numba_cuda import THREADS, grid_size


@cuda.jit
def sigmoid_forward_kernel(x, y):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        value = float64(x[i])
        e = math.exp(-abs(value))
        y[i] = float32(1.0 / (1.0 + e) if value >= 0 else e / (1.0 + e))


@cuda.jit
def sigmoid_backward_kernel(dy, y, dx):
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        dx[i] = dy[i] * y[i] * (float32(1.0) - y[i])


# x: float32 device array, any shape, C-contiguous -> y, a new device array of x's shape
def sigmoid_forward(x):
    y = device_array(x.shape, np.float32)
    sigmoid_forward_kernel[grid_size(x.size), THREADS](x.reshape(-1), y.reshape(-1))
    return y


# dy, y: float32 device arrays of one shape -> dx, a new device array of that shape
def sigmoid_backward(dy, y):
    dx = device_array(y.shape, np.float32)
    sigmoid_backward_kernel[grid_size(y.size), THREADS](dy.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx
