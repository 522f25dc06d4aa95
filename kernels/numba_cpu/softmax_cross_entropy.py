"""Softmax cross-entropy over a vocabulary, fused: the mean loss and d loss / d logits in one pass.

Shapes: logits (N, V) float32, targets (N,) integers in [0, V).
    lse_r  = m_r + log sum_j exp(z_rj - m_r),   m_r = max_j z_rj
    loss   = sum_r (lse_r - z_r,t_r) / N                        (a Python float)
    dz_rj  = (exp(z_rj - lse_r) - [j == t_r]) / N               (float32, (N, V))
as tf.nn.sparse_softmax_cross_entropy_with_logits followed by a mean over rows. Finite for any
finite logits: every exp is of a number <= 0, and the loss is lse - z, never log(p). A row of
-inf only (every logit masked) has p = 0 (softmax.py's rule): its loss is +inf (-log 0, where
TensorFlow gives NaN) and its gradient -1/N at the target, 0 elsewhere.
Cost per logit: ~25 FLOPs (an exp); 8 bytes moved (read z, write dz), where the unfused way
(softmax, then log, gather and mean, then its gradient) moves the N x V matrix 4-5 times.

Fast version: rows in parallel; each row, while in cache, gets its max, its exps written
straight into dz, their float64 sum, then the scale by 1/(sum N); the target's entry is
(exp - sum) / (sum N) in float64, no float32 p - 1 (the row helpers of softmax.py). Each row's loss goes to its own slot and the slots are summed
in float64 afterwards, in order: no shared accumulator, the same result on any thread count.
"""

import math

import numba
import numpy as np
from numba import float32, float64, int64, void

from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.simd import slp_vectorize
from pyai.kernels.numba_cpu.softmax import exp_shifted, row_max, row_sum


def softmax_cross_entropy_reference(logits, targets):
    """float64 numpy: (mean loss, dlogits)."""
    z = logits.astype(np.float64)
    m = z.max(-1, keepdims=True)
    lse = m + np.log(np.exp(z - m).sum(-1, keepdims=True))
    rows = np.arange(len(z))
    dz = np.exp(z - lse)
    dz[rows, targets] -= 1
    return float(np.mean(lse[:, 0] - z[rows, targets])), dz / len(z)


def cross_entropy_kernel(logits, targets, losses, dlogits):
    n = logits.shape[0]
    for r in numba.prange(n):
        z, dz = logits[r], dlogits[r]
        largest = row_max(z)
        if largest == -np.inf:              # every logit masked: p = 0, the target's too
            losses[r] = np.inf
            for j in range(dz.size):
                dz[j] = 0
            dz[targets[r]] = -np.float32(1.0 / n)
            continue
        exp_shifted(z, largest, dz)
        total = row_sum(dz)
        losses[r] = largest + math.log(total) - z[targets[r]]
        target_exp = np.float64(dz[targets[r]])
        scale = np.float32(1.0 / (total * n))
        for j in range(dz.size):
            dz[j] *= scale
        # p - 1 = -(the other exps) / total, in float64: p rounded to float32 minus 1 would
        # cancel where the target holds almost all the mass
        dz[targets[r]] = np.float32((target_exp - total) / (total * n))


with slp_vectorize():   # row_max's 16-lane loop vectorizes only with SLP on
    cross_entropy_kernel = numba.njit(
        void(numba.types.Array(float32, 2, "C", readonly=True),
             numba.types.Array(int64, 1, "C", readonly=True), float64[::1], float32[:, ::1]),
        parallel=True,
        cache=True)(cross_entropy_kernel)


# logits: float32 (N, V), C-contiguous; targets: int64 (N,) in [0, V) -> (loss, dlogits (N, V))
def softmax_cross_entropy(logits, targets):
    losses = np.empty(logits.shape[0], np.float64)
    dlogits = memory.empty_like(logits)
    cross_entropy_kernel(logits, targets, losses, dlogits)
    return float(losses.sum() / logits.shape[0]), dlogits
