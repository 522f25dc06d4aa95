"""Layer normalization over the last axis, forward and backward, float32.

Shapes: x, y, dy, dx (..., C), worked on as N rows of C; gamma, beta, dgamma, dbeta (C,);
mean, rstd (...,): one per row, saved by the forward for the backward.
    forward:  mean = sum_c x / C,  var = sum_c (x - mean)^2 / C,  rstd = 1 / sqrt(var + epsilon)
              xhat = (x - mean) rstd,  y = xhat gamma + beta
    backward: g = dy gamma,  dx = rstd (g - mean_c(g) - xhat mean_c(g xhat))
              dgamma = sum_rows dy xhat,  dbeta = sum_rows dy
(Keras LayerNormalization with the same epsilon; Keras's default epsilon is 1e-3.)
Cost per element: forward ~8 FLOPs and 8 bytes (read x, write y); backward ~12 FLOPs and 12
bytes (read dy and x, write dx). Memory-bound.

Fast version: rows in parallel, each row read while it is in cache. The kernels make no array,
so they run without reference counts (_nrt=False): the row views they hand to row_moments and
row_backward had each taken and dropped a count, locked instructions on one counter that both
threads hit (a GPT's 2048 x 128, an Intel Xeon, family 6 model 207, the two alternating in one
process, best us: forward 113 -> 105 on one thread, 61 -> 58 on two; backward with the residual
309 -> 259, 172 -> 151; the same floats). The row statistics are in
float64 (the mean, then the variance about it, which does not cancel as E[x^2] - mean^2 can;
'reassoc' lets those float64 sums keep several SIMD partial sums), the normalization in float32,
the backward's row in float64 (its three terms t = g - mean(g) - xhat mean(g xhat) can cancel,
and do on rows of few columns), with xhat centered on its own mean (the saved float32 mean is a
rounding off). A row of whole SIMD vectors goes first by explicit vectors in float32 lanes
(row_by_vectors), its three means summed in float64 and dgamma, dbeta added in float64: there
dx is within ~1e-7 of float64's where |t| >= |g| / 4, and a row whose terms cancel more (its
float32 roundings, of g's size, would be a larger part of dx) is done again by the float64 row.
Auto-vectorized, the float64 row took ~3 cycles an element over rows of 128 (likely its loops'
set-up and the conversions; not profiled); the GPT's 2048 x 128 with the residual, the two
alternating in one process, medians of 15 rounds' best us, dx within 1e-7 of the float64 row's:
one thread 262 -> 197, two 153 -> 113 (Intel Xeon, family 6 model 167). The rows handed on go
in a loop of their own after the chunk's vector rows: in the same loop, the float64 row's code
had cost the vector rows 12%.
dgamma and dbeta sum over every row: each chunk of CHUNK_ROWS rows adds into its own float64
slot, and the slots are summed in order at the end, so no two threads write one slot and the
result is the same on any number of threads.
The backward can add a residual gradient to dx as it writes it (`layer_norm_backward_residual`):
a pre-norm block's h = x + f(layer_norm(x)) has dx = dh + layer_norm's dx, which a separate
pass would read back and write again (the float32 dx rounded, then the float32 add: the same
floats either way).
"""

import math

import numba
import numpy as np

from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.simd import (WIDTH, add, add_widened, fma, load, multiply, splat, store, subtract,
                                        wide_lane_sum, wide_vectors, zeros)

CHUNK_ROWS = 32   # rows per dgamma/dbeta slot: enough slots to share out, few enough to sum fast
CANCELS = 16      # row_by_vectors hands on a row whose |t|^2 < |g|^2 / CANCELS (|t| < |g| / 4)
FASTMATH = {"contract"}
SUM_FASTMATH = {"reassoc", "contract"}


def layer_norm_forward_reference(x, gamma, beta, epsilon):
    """float64 numpy: (y, mean, rstd)."""
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + epsilon)
    return (x - mean) * rstd * gamma + beta, mean[..., 0], rstd[..., 0]


def layer_norm_backward_reference(dy, x, gamma, epsilon, rstd=None):
    """float64 numpy, from x itself: (dx, dgamma, dbeta); with `rstd` (one per row, e.g. the
    forward's float32 ones) in place of x's own."""
    _, mean, exact_rstd = layer_norm_forward_reference(x, gamma, 0.0, epsilon)
    rstd = exact_rstd if rstd is None else rstd.astype(np.float64)
    xhat = (x - mean[..., None]) * rstd[..., None]
    g = dy * gamma.astype(np.float64)
    dx = rstd[..., None] * (g - g.mean(-1, keepdims=True)
                            - xhat * (g * xhat).mean(-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    return dx, (dy * xhat).sum(rows), dy.astype(np.float64).sum(rows)


@numba.njit(fastmath=SUM_FASTMATH, cache=True, _nrt=False)
def row_moments(x):
    """(mean, variance) of a 1-d float32 array, in float64."""
    wide_vectors()
    total = 0.0
    for c in range(x.size):
        total += x[c]
    mean = total / x.size
    spread = 0.0
    for c in range(x.size):
        spread += (x[c] - mean) ** 2
    return mean, spread / x.size


@numba.njit(parallel=True, fastmath=FASTMATH, cache=True, _nrt=False)
def layer_norm_forward_kernel(x, gamma, beta, epsilon, y, mean, rstd):
    for r in numba.prange(x.shape[0]):
        wide_vectors()
        row_mean, variance = row_moments(x[r])
        shift = np.float32(row_mean)
        scale = np.float32(1.0 / math.sqrt(variance + epsilon))
        for c in range(x.shape[1]):
            y[r, c] = (x[r, c] - shift) * scale * gamma[c] + beta[c]
        mean[r], rstd[r] = shift, scale


@numba.njit(fastmath=SUM_FASTMATH, cache=True, _nrt=False)
def gradient_means(dy, x, gamma, mean, rstd):
    """(mean_c(g), mean_c(g xhat), mean_c(xhat)) of one row, g = dy gamma, xhat = (x - mean)
    rstd, in float64."""
    wide_vectors()
    g_total = 0.0
    g_xhat_total = 0.0
    xhat_total = 0.0
    for c in range(x.size):
        g = np.float64(dy[c]) * gamma[c]
        xhat = (x[c] - mean) * rstd
        g_total += g
        g_xhat_total += g * xhat
        xhat_total += xhat
    return g_total / x.size, g_xhat_total / x.size, xhat_total / x.size


@numba.njit(fastmath=FASTMATH, cache=True, _nrt=False)
def row_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, residual, has_residual, sums=True):
    """dx of one row (plus the row of `residual` where has_residual); its dy xhat and dy added
    to this chunk's dgamma and dbeta slots, unless not `sums`. In
    float64: g - mean(g) - xhat mean(g xhat) cancels where a row has few columns. The saved
    mean is float32, a rounding off the row's mean, and on a short row that shift of xhat
    (the rounding times rstd) comes out of the cancellation as dx errors of 1e-5 and more;
    xhat is centered on its own float64 mean, so the row's exact mean is the one used."""
    wide_vectors()
    mean, rstd = np.float64(mean), np.float64(rstd)
    g_mean, g_xhat_mean, shift = gradient_means(dy, x, gamma, mean, rstd)
    g_xhat_mean -= shift * g_mean
    for c in range(x.size):
        xhat = (x[c] - mean) * rstd - shift
        value = np.float32(rstd * (np.float64(dy[c]) * gamma[c] - g_mean - xhat * g_xhat_mean))
        dx[c] = value + residual[c] if has_residual else value
        if sums:
            dgamma[c] += dy[c] * xhat
            dbeta[c] += dy[c]


@numba.njit(inline="always", cache=True, _nrt=False)
def row_by_vectors(dy, x, gamma, r, mean, rstd, dx, dgamma, dbeta, residual, has_residual):
    """row_backward for row r of 2-d arrays whose rows are whole vectors, in float32 lanes, the
    row's three means summed in float64 and dgamma, dbeta added in float64; whether dx is done:
    not where the row's terms cancel, |t| < |g| / sqrt(CANCELS) for t = g - mean(g) - xhat
    mean(g xhat), as dx's float32 roundings, of g's size, would then be a larger part of it, or
    where g's squares overflow float32 and that cannot be told (row_backward then redoes dx in
    float64). A gradient row with little along 1 and xhat, as
    a network's usually is, keeps |t| near |g|, and dx within ~1e-7 of float64's."""
    n = x.shape[1]
    start = r * n
    shift, scale = splat(mean), splat(rstd)
    g_sum, g_xhat_sum, xhat_sum, g_squares = zeros(), zeros(), zeros(), zeros()
    for c in range(0, n, WIDTH):
        g = multiply(load(dy, start + c), load(gamma, c))
        xhat = multiply(subtract(load(x, start + c), shift), scale)
        g_sum, xhat_sum = add(g_sum, g), add(xhat_sum, xhat)
        g_xhat_sum, g_squares = fma(g, xhat, g_xhat_sum), fma(g, g, g_squares)
    inverse = 1.0 / n
    g_mean = wide_lane_sum(g_sum) * inverse
    xhat_mean = wide_lane_sum(xhat_sum) * inverse       # xhat centered on it, as in row_backward
    g_xhat_mean = wide_lane_sum(g_xhat_sum) * inverse - xhat_mean * g_mean
    centre, g_centre, slope = splat(np.float32(xhat_mean)), splat(np.float32(g_mean)), splat(np.float32(g_xhat_mean))
    t_squares = zeros()
    for c in range(0, n, WIDTH):
        d = load(dy, start + c)
        xhat = subtract(multiply(subtract(load(x, start + c), shift), scale), centre)
        t = subtract(subtract(multiply(d, load(gamma, c)), g_centre), multiply(xhat, slope))
        t_squares = fma(t, t, t_squares)
        value = multiply(scale, t)
        store(dx, start + c, add(value, load(residual, start + c)) if has_residual else value)
        add_widened(dgamma, c, multiply(d, xhat))
        add_widened(dbeta, c, d)
    g_total = wide_lane_sum(g_squares)   # inf where g's float32 squares overflow (|g| > ~1e19):
    return g_total < np.inf and CANCELS * wide_lane_sum(t_squares) >= g_total   # then handed on too


@numba.njit(parallel=True, cache=True, _nrt=False)
def layer_norm_backward_kernel(dy, x, gamma, mean, rstd, dx, dgamma_slots, dbeta_slots, residual, has_residual, redo):
    """Rows of whole vectors by row_by_vectors; those it hands on (marked in redo, a flag a row)
    and all others by row_backward, after the chunk's vector rows."""
    n, width = x.shape
    by_vectors = width % WIDTH == 0
    for chunk in numba.prange(dgamma_slots.shape[0]):
        rows = range(chunk * CHUNK_ROWS, min(n, (chunk + 1) * CHUNK_ROWS))
        for r in rows:
            redo[r] = not (by_vectors and row_by_vectors(dy, x, gamma, r, mean[r], rstd[r], dx, dgamma_slots[chunk],
                                                         dbeta_slots[chunk], residual, has_residual))
        for r in rows:
            if redo[r]:
                row_backward(dy[r], x[r], gamma, mean[r], rstd[r], dx[r], dgamma_slots[chunk], dbeta_slots[chunk],
                             residual[r] if has_residual else dy[r], has_residual, not by_vectors)


# x, y (..., C), gamma, beta (C,): float32, C-contiguous -> y, mean (...,), rstd (...,)
def layer_norm_forward(x, gamma, beta, epsilon):
    width = x.shape[-1]
    y = memory.empty_like(x)
    mean = np.empty(x.shape[:-1], np.float32)
    rstd = np.empty(x.shape[:-1], np.float32)
    layer_norm_forward_kernel(x.reshape(-1, width), gamma, beta, np.float64(epsilon),
                              y.reshape(-1, width), mean.reshape(-1), rstd.reshape(-1))
    return y, mean, rstd


# dy, x (..., C), gamma (C,), mean, rstd (...,): float32 -> dx (..., C), dgamma, dbeta (C,)
def layer_norm_backward(dy, x, gamma, mean, rstd):
    return backward(dy, x, gamma, mean, rstd, None)


# the same, and residual (..., C), float32, C-contiguous, added to dx
def layer_norm_backward_residual(dy, x, gamma, mean, rstd, residual):
    return backward(dy, x, gamma, mean, rstd, residual)


def backward(dy, x, gamma, mean, rstd, residual):
    width = x.shape[-1]
    rows = x.size // width
    slots = -(-rows // CHUNK_ROWS)
    dgamma_slots = np.zeros((slots, width), np.float64)
    dbeta_slots = np.zeros((slots, width), np.float64)
    dx = memory.empty_like(x)
    layer_norm_backward_kernel(dy.reshape(-1, width), x.reshape(-1, width), gamma,
                               mean.reshape(-1), rstd.reshape(-1), dx.reshape(-1, width),
                               dgamma_slots, dbeta_slots, (dy if residual is None else residual).reshape(-1, width),
                               residual is not None, np.empty(rows, np.bool_))
    return (dx, dgamma_slots.sum(axis=0).astype(np.float32),
            dbeta_slots.sum(axis=0).astype(np.float32))
