"""Layer normalization over the last axis on the GPU (numba.cuda), forward and backward, float32.

Shapes: x, y, dy, dx (..., C), worked on as N rows of C; gamma, beta, dgamma, dbeta (C,);
mean, rstd (...,): one per row, saved by the forward for the backward.
    forward:  mean = sum_c x / C,  var = sum_c (x - mean)^2 / C,  rstd = 1 / sqrt(var + epsilon)
              xhat = (x - mean) rstd,  y = xhat gamma + beta
    backward: g = dy gamma,  dx = rstd (g - mean_c(g) - xhat mean_c(g xhat))
              dgamma = sum_rows dy xhat,  dbeta = sum_rows dy
Cost per element: forward ~8 FLOPs and 8 bytes (read x, write y); backward ~12 FLOPs and 12
bytes (read dy and x, write dx). Memory-bound.

Fast version: one block of ROW_THREADS threads per row (forward) or per run of rows
(backward); thread t takes columns t, t + ROW_THREADS, ... (coalesced), and the row sums are
block reductions (`block_sum`). As in the CPU kernel the row statistics are float64 sums (the
mean, then the spread about it, which does not cancel as E[x^2] - mean^2 can), the
normalization float32; the row's later passes read it from L1/L2, not memory. The backward
centers xhat on its own mean: the saved float32 mean is a rounding off the row's, and on a short
row that shift comes out of dx's cancellation as errors of 1e-5 and more.
dgamma and dbeta sum over rows without atomics: block b adds its rows into its own float64 row
of `partials` (thread t owning columns t mod ROW_THREADS, so no two threads write one slot),
then one thread per column sums the BACKWARD_BLOCKS partials in order: the same result on every
run. The plain references are the CPU kernel's numpy ones.

block_sum: a warp sums its 32 values with butterfly shuffles, the warps' sums meet in shared
memory and every thread adds them in the same order. The CUDA simulator has no warp intrinsics,
so there (WARP_SHUFFLE false) thread 0 adds up all the values in shared memory: two barriers,
where a tree would take log2(ROW_THREADS), and each costs the simulator dearly. It lives in
this file, not a shared one, because the simulator swaps `cuda` into a device function's
module only while it runs, which races when many threads call into another module.
"""

import math

import numba
import numpy as np
from numba import cuda, float32, float64

from pyai.kernels.numba_cpu.layer_norm import (layer_norm_backward_reference,  # noqa: F401  (the references)
                                     layer_norm_forward_reference)
from pyai.kernels.numba_cuda.buffers import device_array

ROW_THREADS = 128        # threads per row: C = 768 gives each 6 columns
BACKWARD_BLOCKS = 264    # blocks of the backward, 2 per SM on an H100: the number of partials
SUM_THREADS = 128        # threads per block of the column sums
WARP = 32
FULL_MASK = 0xFFFFFFFF
WARP_SHUFFLE = not numba.config.ENABLE_CUDASIM


@cuda.jit(device=True)
def block_sum(value, scratch):
    """The sum of `value` over the block's threads, returned to every thread; scratch: a shared
    float64 array of ROW_THREADS, free again when this returns."""
    thread = cuda.threadIdx.x
    if WARP_SHUFFLE:
        for offset in (16, 8, 4, 2, 1):
            value += cuda.shfl_xor_sync(FULL_MASK, value, offset)
        if thread % WARP == 0:
            scratch[thread // WARP] = value
        cuda.syncthreads()
        total = scratch[0]
        for warp in range(1, ROW_THREADS // WARP):
            total += scratch[warp]
    else:
        scratch[thread] = value
        cuda.syncthreads()
        if thread == 0:
            for other in range(1, ROW_THREADS):
                scratch[0] += scratch[other]
        cuda.syncthreads()
        total = scratch[0]
    cuda.syncthreads()
    return total


@cuda.jit
def layer_norm_forward_kernel(x, gamma, beta, epsilon, y, mean, rstd):
    scratch = cuda.shared.array(ROW_THREADS, float64)
    row, thread, width = cuda.blockIdx.x, cuda.threadIdx.x, x.shape[1]
    total = float64(0.0)
    for c in range(thread, width, ROW_THREADS):
        total += x[row, c]
    row_mean = block_sum(total, scratch) / width
    spread = float64(0.0)
    for c in range(thread, width, ROW_THREADS):
        deviation = x[row, c] - row_mean
        spread += deviation * deviation
    variance = block_sum(spread, scratch) / width
    shift = float32(row_mean)
    scale = float32(1.0 / math.sqrt(variance + epsilon))
    for c in range(thread, width, ROW_THREADS):
        y[row, c] = (x[row, c] - shift) * scale * gamma[c] + beta[c]
    if thread == 0:
        mean[row], rstd[row] = shift, scale


@cuda.jit
def layer_norm_backward_kernel(dy, x, gamma, mean, rstd, dx, dgamma_partials, dbeta_partials):
    scratch = cuda.shared.array(ROW_THREADS, float64)
    block, thread, width = cuda.blockIdx.x, cuda.threadIdx.x, x.shape[1]
    for c in range(thread, width, ROW_THREADS):
        dgamma_partials[block, c] = 0.0
        dbeta_partials[block, c] = 0.0
    for row in range(block, x.shape[0], cuda.gridDim.x):
        row_mean, row_rstd = mean[row], rstd[row]
        g_total = float64(0.0)
        g_xhat_total = float64(0.0)
        xhat_total = float64(0.0)
        for c in range(thread, width, ROW_THREADS):
            g = float64(dy[row, c] * gamma[c])
            xhat = float64((x[row, c] - row_mean) * row_rstd)
            g_total += g
            g_xhat_total += g * xhat
            xhat_total += xhat
        g_mean = block_sum(g_total, scratch) / width
        shift = block_sum(xhat_total, scratch) / width
        g_xhat_mean = float32(block_sum(g_xhat_total, scratch) / width - shift * g_mean)
        g_mean, shift = float32(g_mean), float32(shift)
        for c in range(thread, width, ROW_THREADS):
            xhat = (x[row, c] - row_mean) * row_rstd - shift
            dx[row, c] = row_rstd * (dy[row, c] * gamma[c] - g_mean - xhat * g_xhat_mean)
            dgamma_partials[block, c] += dy[row, c] * xhat
            dbeta_partials[block, c] += dy[row, c]


@cuda.jit
def column_sums_kernel(partials, sums):
    """sums[c] = sum_b partials[b, c], in order."""
    c = cuda.grid(1)
    if c < sums.size:
        total = float64(0.0)
        for b in range(partials.shape[0]):
            total += partials[b, c]
        sums[c] = total


# x (..., C), gamma, beta (C,): float32 device arrays -> y (..., C), mean (...,), rstd (...,)
def layer_norm_forward(x, gamma, beta, epsilon):
    width = x.shape[x.ndim - 1]   # not shape[-1]: the simulator's shapes refuse it
    rows = x.size // width
    y = device_array(x.shape, np.float32)
    mean = device_array(x.shape[:-1], np.float32)
    rstd = device_array(x.shape[:-1], np.float32)
    layer_norm_forward_kernel[rows, ROW_THREADS](x.reshape(rows, width), gamma, beta,
                                                 np.float64(epsilon), y.reshape(rows, width),
                                                 mean.reshape(rows), rstd.reshape(rows))
    return y, mean, rstd


def column_sums(partials):
    sums = device_array(partials.shape[1], np.float32)
    column_sums_kernel[-(-sums.size // SUM_THREADS), SUM_THREADS](partials, sums)
    return sums


# dy, x (..., C), gamma (C,), mean, rstd (...,): float32 device arrays
#   -> dx (..., C), dgamma (C,), dbeta (C,)
def layer_norm_backward(dy, x, gamma, mean, rstd):
    width = x.shape[x.ndim - 1]   # not shape[-1]: the simulator's shapes refuse it
    rows = x.size // width
    blocks = min(rows, BACKWARD_BLOCKS)
    dgamma_partials = device_array((blocks, width), np.float64)
    dbeta_partials = device_array((blocks, width), np.float64)
    dx = device_array(x.shape, np.float32)
    layer_norm_backward_kernel[blocks, ROW_THREADS](
        dy.reshape(rows, width), x.reshape(rows, width), gamma, mean.reshape(rows),
        rstd.reshape(rows), dx.reshape(rows, width), dgamma_partials, dbeta_partials)
    return dx, column_sums(dgamma_partials), column_sums(dbeta_partials)
