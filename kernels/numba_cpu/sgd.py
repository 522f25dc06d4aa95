"""Plain SGD step, in place: param -= lr * grad, on float32 arrays of any shape.

Cost per element: 2 FLOPs, 12 bytes moved (read param and grad, write param): memory-bound.

Fast version: one pass over the flat arrays, chunks across threads by numba.prange; the body
vectorizes. lr is cast to float32 once and the product rounded before the subtraction (no FMA
contraction), exactly as Keras's SGD computes `variable - gradient * learning_rate` in float32.
"""

import numba
import numpy as np


def sgd_update_reference(param, grad, lr):
    param -= grad * np.float32(lr)


@numba.njit(parallel=True, cache=True)
def sgd_update_kernel(param, grad, lr):
    for i in numba.prange(param.size):
        param[i] -= grad[i] * lr


# param, grad: float32, the same shape, C-contiguous; param is updated in place
def sgd_update(param, grad, lr):
    sgd_update_kernel(param.reshape(-1), grad.reshape(-1), np.float32(lr))
