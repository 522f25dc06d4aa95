"""One Adam step on the GPU (numba.cuda), in place on param, m and v (Keras 3's Adam.update_step).

    alpha  = lr * sqrt(1 - beta_2^step) / (1 - beta_1^step)        (a scalar, on the host)
    m     += (g - m) * (1 - beta_1)
    v     += (g^2 - v) * (1 - beta_2)
    param -= m * alpha / (sqrt(v) + epsilon)

Shapes: param, grad, m, v float32 device arrays of one shape, C-contiguous.
Cost per element: ~10 FLOPs, a sqrt and a divide; 28 bytes moved (read 4 arrays, write 3):
memory-bound.

Fast version: a grid-stride loop, each element read once and its three updates fused, where
Keras makes a pass over memory per operation. alpha is computed on the host in float32 exactly
as Keras does (kernels/numba_cpu/adam.py explains why float64 would be 6e-6 off); every operation is a
float32 one in Keras's order, with IEEE sqrt and division (no fastmath). NVVM may fuse a
multiply and an add into an FMA, which rounds once instead of twice: within an ulp of Keras.
The plain reference is the CPU kernel's numpy one.
"""

import math

import numpy as np
from numba import cuda

from pyai.kernels.common import adam_step_size
from pyai.kernels.numba_cpu.adam import adam_update_reference  # noqa: F401  (the reference)
from pyai.kernels.numba_cuda import THREADS, grid_size


@cuda.jit
def adam_update_kernel(param, grad, m, v, alpha, one_minus_beta_1, one_minus_beta_2, epsilon):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i]
        m[i] += (g - m[i]) * one_minus_beta_1
        v[i] += (g * g - v[i]) * one_minus_beta_2
        param[i] -= m[i] * alpha / (math.sqrt(v[i]) + epsilon)


# param, grad, m, v: float32 device arrays of one shape; param, m and v are updated in place
def adam_update(param, grad, m, v, lr, beta_1, beta_2, epsilon, step):
    alpha = adam_step_size(lr, beta_1, beta_2, step)
    adam_update_kernel[grid_size(param.size), THREADS](param.reshape(-1), grad.reshape(-1), m.reshape(-1),
                                                       v.reshape(-1), alpha, np.float32(1 - beta_1),
                                                       np.float32(1 - beta_2), np.float32(epsilon))
