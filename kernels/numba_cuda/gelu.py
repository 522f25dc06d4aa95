"""GELU with the tanh approximation (GPT-2's; Keras `gelu(approximate=True)`), forward and
backward, on the GPU (numba.cuda), float32 device arrays of any shape.

    u  = sqrt(2/pi) (x + 0.044715 x^3)
    y  = x (1 + tanh u) / 2  =  x s,         s = sigmoid(2u)
    dx = dy gelu'(x),  gelu'(x) = s + 2 x s (1 - s) u',   u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
As in the CPU kernel, the sigmoid form with e = exp(-|2u|), which lies in [0, 1] and never
overflows: s = 1 / (1 + e) for u >= 0, e / (1 + e) for u < 0, and s (1 - s) = e / (1 + e)^2,
so nothing cancels where s is near 0 or 1 (0.5 x (1 + tanh u) does, for x < -3).
Cost per element: ~25 FLOPs (an exp and a divide); forward 8 bytes moved (read x, write y),
backward 12 (read dy and x, write dx). Memory-bound on a GPU with fast float64.

Every step up to y and gelu'(x) is float64, rounded once: within half an ulp of exact, where the
CPU kernel's float32 keeps ~2 |u| ulp in the negative tail; x^3 cannot overflow (x = 1e15 gives
y = x, gelu' = 1; x = -1e15 gives 0 and 0). dx is dy times the float32 gelu'(x), one float32
multiply, so dy * gelu_grad(1, x) is gelu_grad(dy, x) bit for bit (ops.gelu's derivative,
made by gelu_grad on this backend).

Fast version: a grid-stride loop over the flat arrays (as leaky_relu.py), coalesced, the grid
capped at MAX_BLOCKS. The plain references are the CPU kernel's numpy ones.
"""

import math

import numpy as np
from numba import cuda, float32, float64

from pyai.kernels.numba_cpu.gelu import gelu_backward_reference, gelu_forward_reference  # noqa: F401
from pyai.kernels.numba_cuda.buffers import device_array
from pyai.kernels.numba_cuda import THREADS, grid_size

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
CUBIC = 0.044715


@cuda.jit(device=True)
def exp_and_sigmoid(x):
    """(e, s) of one float64 x: e = exp(-|2u|), s = sigmoid(2u) (u has x's sign)."""
    u = SQRT_2_OVER_PI * (x + CUBIC * x * x * x)
    e = math.exp(-2.0 * abs(u))
    return e, (1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e))


@cuda.jit
def gelu_forward_kernel(x, y):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        value = float64(x[i])
        s = exp_and_sigmoid(value)[1]
        y[i] = float32(value * s)


@cuda.jit
def gelu_backward_kernel(dy, x, dx):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        value = float64(x[i])
        e, s = exp_and_sigmoid(value)
        slope = SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * value * value)
        inverse = 1.0 / (1.0 + e)
        dx[i] = dy[i] * float32(s + 2.0 * value * (e * inverse * inverse) * slope)


# x: float32 device array, any shape, C-contiguous -> y, a new device array of x's shape
def gelu_forward(x):
    y = device_array(x.shape, np.float32)
    gelu_forward_kernel[grid_size(x.size), THREADS](x.reshape(-1), y.reshape(-1))
    return y


# dy, x: float32 device arrays of one shape -> dx, a new device array of that shape
def gelu_backward(dy, x):
    dx = device_array(x.shape, np.float32)
    gelu_backward_kernel[grid_size(x.size), THREADS](dy.reshape(-1), x.reshape(-1), dx.reshape(-1))
    return dx
