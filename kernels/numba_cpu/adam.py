"""One Adam step, in place on param, m and v (Keras 3's Adam.update_step), float32, any shape.

    alpha  = lr * sqrt(1 - beta_2^step) / (1 - beta_1^step)        (a scalar, once per step)
    m     += (g - m) * (1 - beta_1)
    v     += (g^2 - v) * (1 - beta_2)
    param -= m * alpha / (sqrt(v) + epsilon)

Cost per element: ~10 FLOPs and a sqrt and a divide; 28 bytes moved (read param, grad, m, v;
write param, m, v). Memory-bound.

Fast version: one pass over the flat arrays, chunks across threads by numba.prange (one thread
below first_call.PARALLEL_ELEMENTS elements); each element is read once and its three updates
are fused, where Keras makes a pass over memory for each operation. error_model="numpy" drops
Python's divide-by-zero check, which would keep the loop from vectorizing (with epsilon = 0 and
v = 0 it gives NaN, as Keras does, not an exception).

Every scalar is rounded to float32 first and each operation is done in float32 in Keras's order,
so a step matches Keras bit for bit. alpha in particular is computed in float32 as Keras does
(beta^step with float32 beta and step): in float64 it would differ by 6e-6 relative at step 1,
because float32(0.999) is 1.3e-8 below 0.999, which is 1.3e-5 of 1 - beta_2.
"""

import numba
import numpy as np

from pyai.kernels.common import adam_step_size
from pyai.kernels.numba_cpu.first_call import BySize


def adam_update_reference(param, grad, m, v, lr, beta_1, beta_2, epsilon, step):
    alpha = adam_step_size(lr, beta_1, beta_2, step)
    m += (grad - m) * np.float32(1 - beta_1)
    v += (grad * grad - v) * np.float32(1 - beta_2)
    param -= m * alpha / (np.sqrt(v) + np.float32(epsilon))


@BySize
@numba.njit(parallel=True, error_model="numpy", cache=True)
def adam_update_kernel(param, grad, m, v, alpha, one_minus_beta_1, one_minus_beta_2, epsilon):
    for i in numba.prange(param.size):
        g = grad[i]
        m[i] += (g - m[i]) * one_minus_beta_1
        v[i] += (g * g - v[i]) * one_minus_beta_2
        param[i] -= m[i] * alpha / (np.sqrt(v[i]) + epsilon)


# param, grad, m, v: float32, the same shape, C-contiguous; param, m and v are updated in place
def adam_update(param, grad, m, v, lr, beta_1, beta_2, epsilon, step):
    alpha = adam_step_size(lr, beta_1, beta_2, step)
    adam_update_kernel(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1), alpha,
                       np.float32(1 - beta_1), np.float32(1 - beta_2), np.float32(epsilon))
