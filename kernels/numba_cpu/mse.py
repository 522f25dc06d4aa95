"""Mean squared error and its gradient, over every element of float32 arrays of any shape.

    forward:  loss = sum((p - t)^2) / n           (a Python float; n = p.size)
    backward: d    = 2 (p - t) / n                (d loss / d p, float32, the shape of p)

Cost per element: forward 3 FLOPs, 8 bytes read (p and t); backward 2 FLOPs, 12 bytes (read p
and t, write d). Both are memory-bound.

Fast version: the forward is a parallel sum over fixed blocks of SUM_BLOCK elements, one float64
partial sum each, added in block order at the end: the same partition, so the same bits, on any
thread count and threading layer (TBB hands chunks to threads dynamically, so a prange reduction
into per-thread sums would differ in the last bit from call to call). The differences and the sum are in float64:
a float32 running sum loses ~n * 6e-8 relative (1e-2 for a million terms of 0.01).
'reassoc' lets LLVM keep several SIMD partial sums per thread (the order of a float64 sum of
squares changes the result only in its last digits); no nnan/ninf, so NaN and inf propagate.
"""

import numba
import numpy as np

SUM_FASTMATH = {"reassoc", "contract"}
SUM_BLOCK = 4096   # elements per partial sum


def mse_forward_reference(prediction, target):
    return float(np.mean((prediction.astype(np.float64) - target) ** 2))


def mse_backward_reference(prediction, target):
    return (2 * (prediction - target) / prediction.size).astype(np.float32)


@numba.njit(parallel=True, fastmath=SUM_FASTMATH, cache=True)
def mse_sum_kernel(prediction, target):
    blocks = -(-prediction.size // SUM_BLOCK)
    partial = np.empty(blocks)
    for block in numba.prange(blocks):
        total = 0.0
        for i in range(block * SUM_BLOCK, min(prediction.size, (block + 1) * SUM_BLOCK)):
            difference = np.float64(prediction[i]) - np.float64(target[i])
            total += difference * difference
        partial[block] = total
    total = 0.0
    for block in range(blocks):
        total += partial[block]
    return total


@numba.njit(parallel=True, cache=True)
def mse_backward_kernel(prediction, target, scale, d):
    for i in numba.prange(prediction.size):
        d[i] = (prediction[i] - target[i]) * scale


# prediction, target: float32, the same shape, C-contiguous
def mse_forward(prediction, target):
    return mse_sum_kernel(prediction.reshape(-1), target.reshape(-1)) / prediction.size


# prediction, target, d: float32, the same shape, C-contiguous
def mse_backward(prediction, target):
    d = np.empty_like(prediction)
    scale = np.float32(2.0 / prediction.size)
    mse_backward_kernel(prediction.reshape(-1), target.reshape(-1), scale, d.reshape(-1))
    return d
