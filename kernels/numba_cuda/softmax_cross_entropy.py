"""Softmax cross-entropy on the GPU (numba.cuda), fused: the mean loss and d loss / d logits.

Shapes: logits (N, V) float32, targets (N,) int64 in [0, V), both device arrays.
    lse_r  = m_r + log sum_j exp(z_rj - m_r),   m_r = max_j z_rj
    loss   = sum_r (lse_r - z_r,t_r) / N                        (a Python float)
    dz_rj  = (exp(z_rj - lse_r) - [j == t_r]) / N               (float32, (N, V))
as tf.nn.sparse_softmax_cross_entropy_with_logits followed by a mean over rows. Every exp is of
a number <= 0 and the loss is lse - z, never log(p): finite for any finite logits. A row of -inf
only (every logit masked) has p = 0, as on the CPU: loss +inf, gradient -1/N at the target.
Cost per logit: ~25 FLOPs (an exp); 8 bytes moved (read z, write dz), where the unfused way
(softmax, then log, gather and mean, then its gradient) moves the N x V matrix 4-5 times.

Fast version: one block of ROW_THREADS threads per row, thread t taking logits t,
t + ROW_THREADS, ... (coalesced). Three passes over the row, the first from memory and the
others from L2 (a 50k-logit row is 200 KB): its max (a block reduction), the float64 sum of
exp(z - max) (a block reduction; float64 as in the CPU kernel, since a float32 sum of V terms
scales every output of the row by its error), then dz = exp(z - max) / (sum N), and -1/N at
the target. Each row's loss goes to its own float64 slot; the host sums the slots in order.
The plain reference is the CPU kernel's numpy one.

block_reduce: a warp combines its 32 values with butterfly shuffles, the warps' results meet in
shared memory and every thread combines them in the same order. The CUDA simulator has no warp
intrinsics, so there (WARP_SHUFFLE false) thread 0 combines all the values in shared memory
(two barriers, where a tree would take log2(ROW_THREADS), each costly in the simulator). It
is in this file, not a shared one, for the reason given in layer_norm.py.
"""

import math

import numba
import numpy as np
from numba import cuda, float32, float64

from pyai.kernels.numba_cpu.softmax_cross_entropy import softmax_cross_entropy_reference  # noqa: F401
from pyai.kernels.numba_cuda.buffers import device_array

ROW_THREADS = 256    # threads per row: V = 50257 gives each ~200 logits
WARP = 32
FULL_MASK = 0xFFFFFFFF
WARP_SHUFFLE = not numba.config.ENABLE_CUDASIM


@cuda.jit(device=True)
def larger(a, b):
    """max(a, b): numba 0.66+ cannot compile the builtin two-argument max for CUDA (numba
    issue #10753)."""
    return a if a > b else b


@cuda.jit(device=True)
def combine(a, b, take_max):
    return larger(a, b) if take_max else a + b


@cuda.jit(device=True)
def block_reduce(value, scratch, take_max):
    """The sum (or max) of a float64 `value` over the block, returned to every thread;
    scratch: a shared float64 array of ROW_THREADS, free again when this returns."""
    thread = cuda.threadIdx.x
    if WARP_SHUFFLE:
        for offset in (16, 8, 4, 2, 1):
            value = combine(value, cuda.shfl_xor_sync(FULL_MASK, value, offset), take_max)
        if thread % WARP == 0:
            scratch[thread // WARP] = value
        cuda.syncthreads()
        result = scratch[0]
        for warp in range(1, ROW_THREADS // WARP):
            result = combine(result, scratch[warp], take_max)
    else:
        scratch[thread] = value
        cuda.syncthreads()
        if thread == 0:
            for other in range(1, ROW_THREADS):
                scratch[0] = combine(scratch[0], scratch[other], take_max)
        cuda.syncthreads()
        result = scratch[0]
    cuda.syncthreads()
    return result


@cuda.jit
def cross_entropy_kernel(logits, targets, losses, dlogits):
    scratch = cuda.shared.array(ROW_THREADS, float64)
    row, thread = cuda.blockIdx.x, cuda.threadIdx.x
    n, width = logits.shape
    largest = float64(-math.inf)
    for j in range(thread, width, ROW_THREADS):
        largest = larger(largest, float64(logits[row, j]))
    row_max = float32(block_reduce(largest, scratch, True))
    target = targets[row]
    if row_max == -math.inf:    # every logit masked (the whole block sees it): p = 0, the target's too
        for j in range(thread, width, ROW_THREADS):
            dlogits[row, j] = -float32(1.0 / n) if j == target else float32(0)
        if thread == 0:
            losses[row] = math.inf
        return
    total = float64(0.0)
    for j in range(thread, width, ROW_THREADS):
        total += math.exp(logits[row, j] - row_max)
    total = block_reduce(total, scratch, False)
    scale = float32(1.0 / (total * n))
    for j in range(thread, width, ROW_THREADS):
        e = math.exp(logits[row, j] - row_max)
        # the target's p - 1 as -(the other exps) / total in float64: no float32 cancellation
        dlogits[row, j] = float32((float64(e) - total) / (total * n)) if j == target else e * scale
    if thread == 0:
        # in float64 by hand: under the simulator, NumPy 2 keeps float32 + a Python float float32
        losses[row] = float64(row_max) + math.log(total) - float64(logits[row, target])


# logits: float32 (N, V), targets: int64 (N,) in [0, V), device arrays
#   -> (loss, a Python float; dlogits, a float32 (N, V) device array)
def softmax_cross_entropy(logits, targets):
    losses = device_array(logits.shape[0], np.float64)
    dlogits = device_array(logits.shape, np.float32)
    cross_entropy_kernel[logits.shape[0], ROW_THREADS](logits, targets, losses, dlogits)
    return float(losses.copy_to_host().sum() / logits.shape[0]), dlogits
