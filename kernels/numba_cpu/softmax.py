"""Softmax over the last axis, float32, and the row helpers the other softmax kernels share.

    y[r, j] = exp(x[r, j] - m_r) / sum_k exp(x[r, k] - m_r),   m_r = max_k x[r, k]

Shapes: x, y (..., V), worked on as N rows of V. Subtracting the row max keeps every exp in
(0, 1], so no logit overflows it (logits of +-1e4 give exact 0s and 1s, never NaN). A row of
-inf only (every position masked) gives 0s, the attention kernels' rule for a query that sees no
key, where IEEE arithmetic (and TensorFlow) would give NaN (-inf - -inf); a +inf logit gives NaN.
Cost per element: ~25 FLOPs (an exp, a subtract, an add and a multiply); 8 bytes moved (read x,
write y) when a row fits in L2, which it does up to V ~ 100k.

Fast version: rows in parallel; per row four passes that each vectorize: the max (16 lanes on
the stack, see `stack_lanes`), the exps (sigmoid.exp_negative, SIMD-friendly arithmetic instead
of a libm call) written into y, their sum in float64 (several SIMD partial sums: 'reassoc' in
that pass only, which changes the order of a float64 sum in its last digits and nothing else),
and the scale by 1/sum. The sum is in float64 because a float32 sum of V terms is off by up to
~V * 6e-8 relative, and that error scales every output of the row.
"""

import numba
import numpy as np
from numba import float32, types, void
from numba.core import cgutils
from numba.extending import intrinsic

from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.matmul_micro import NR
from pyai.kernels.numba_cpu.sigmoid import exp_negative   # exp(-a) for a >= 0; exp(-inf) = 0
from pyai.kernels.numba_cpu.simd import slp_vectorize

FASTMATH = {"contract"}
SUM_FASTMATH = {"reassoc", "contract"}


def softmax_reference(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@intrinsic
def stack_lanes(typingctx):
    """Scratch for NR float32 lanes on the stack (numba.carray(stack_lanes(), NR)). LLVM knows a
    stack array overlaps no other array, so short loops that update it from an array vectorize;
    a heap array might overlap the array read, for all LLVM knows, and keeps them scalar."""
    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(types.float32), size=NR)
    return types.CPointer(types.float32)(), codegen


@numba.njit(cache=True)
def row_max(x):
    """max(x) of a 1-d array: NR running maxima, one a SIMD lane, then the max of those."""
    lanes = numba.carray(stack_lanes(), NR)
    lanes[:] = -np.inf
    whole = x.size - x.size % NR
    for start in range(0, whole, NR):
        for c in range(NR):
            lanes[c] = max(lanes[c], x[start + c])
    largest = lanes.max()
    for j in range(whole, x.size):
        largest = max(largest, x[j])
    return largest


@numba.njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def exp_shifted(x, shift, out):
    """out = exp(x - shift), for shift >= max(x)."""
    for j in range(x.size):
        out[j] = exp_negative(shift - x[j])


@numba.njit(fastmath=SUM_FASTMATH, cache=True)
def row_sum(x):
    total = 0.0
    for j in range(x.size):
        total += x[j]
    return total


def softmax_kernel(x, y):
    for r in numba.prange(x.shape[0]):
        largest = row_max(x[r])
        if largest == -np.inf:              # every position masked: no probability anywhere
            for j in range(y.shape[1]):
                y[r, j] = 0
            continue
        exp_shifted(x[r], largest, y[r])
        inverse = np.float32(1.0 / row_sum(y[r]))
        for j in range(y.shape[1]):
            y[r, j] *= inverse


with slp_vectorize():   # row_max's 16-lane loop vectorizes only with SLP on
    softmax_kernel = numba.njit(void(numba.types.Array(float32, 2, "C", readonly=True),
                                     float32[:, ::1]), parallel=True,
                                cache=True)(softmax_kernel)


# x, y: float32 (..., V), C-contiguous
def softmax_forward(x):
    y = memory.empty_like(x)
    softmax_kernel(x.reshape(-1, x.shape[-1]), y.reshape(-1, x.shape[-1]))
    return y
