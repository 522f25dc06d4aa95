"""Attention backward on the GPU (numba.cuda), flash style: dq, dk, dv from do, recomputing the
probabilities from the forward's lse.

Shapes: q, o, do, dq (B, H, Tq, D); k, v, dk, dv (B, H, Tk, D); lse (B, H, Tq); float32 device
arrays. With s = scale q k^T (masked as in attention_forward.py):
    p = exp(s - lse),   dv = p^T do,   dp = do v^T,   ds = p (dp - delta),   delta_i = do_i . o_i
    dq = scale ds k,    dk = scale ds^T q
Cost: 10 B H Tq Tk D FLOPs (5 products) here 14 (s and dp are computed twice, see below), about
half with the causal mask; memory O((Tq + Tk) D), never O(Tq Tk).

Fast version, FlashAttention-2's backward split into two kernels so that no output is added to
by two blocks (no atomics, the same result on every run):
  delta: one thread per query row, delta_i = do_i . o_i;
  keys: one block per (batch * head, tile of TILE keys); k and v tiles stay in shared memory,
    and for each query tile that sees them: s^T and dp^T in registers (rows: keys t // 8 +
    16 i; columns: queries t % 8 + 8 j), p^T then ds^T through shared memory, and the thread's
    rows of dv += p^T do and dk += ds^T q in registers;
  queries: one block per (batch * head, tile of TILE queries); q and do tiles stay in shared
    memory, and for each key tile they see: s, dp and ds as above, dq += ds k in registers.
Both kernels recompute s and dp, which costs 4 of the 14 FLOPs; in exchange each output has one
owner. Tiles are row-major in shared memory with one float of padding per row (no bank
conflicts). One pair of kernels per padded depth is compiled on first use. No warp
intrinsics are used, so the simulator runs the same code. The plain reference is the CPU
kernel's `attention_backward_reference`.
"""

import functools
import math

import numpy as np
from numba import cuda, float32

from pyai.kernels.numba_cpu.attention_backward import attention_backward_reference  # noqa: F401
from pyai.kernels.numba_cuda import GRID_Y_MAX, check_grid_y
from pyai.kernels.numba_cuda.attention_forward import (LANES, ROW_GROUPS, THREADS, hidden, larger,
                                                 load_rows, padded_depth, smaller)
from pyai.kernels.numba_cuda.buffers import device_array

DELTA_THREADS = 128


def tile_size(depth_padded):
    """Keys (and queries) per tile: four TILE x depth tiles and a TILE x TILE one fit in 48 KB."""
    return 32 if depth_padded <= 64 else 16


@cuda.jit
def delta_kernel(do, o, delta):
    """delta[r] = sum_d do[r, d] o[r, d], for rows of (heads * Tq, D)."""
    r = cuda.grid(1)
    if r < delta.size:
        total = float32(0.0)
        for d in range(o.shape[1]):
            total += do[r, d] * o[r, d]
        delta[r] = total


@cuda.jit(device=True)
def load_vector(x, first, tile, thread):
    """tile[i] = x[first + i], zero past the end of x."""
    for i in range(thread, tile.shape[0], THREADS):
        tile[i] = x[first + i] if first + i < x.shape[0] else float32(0.0)


@functools.cache
def backward_kernels(depth_padded):
    """(keys kernel, queries kernel) for one padded depth, compiled on their first launch."""
    tile = tile_size(depth_padded)
    rows = tile // ROW_GROUPS       # a thread's rows of a tile
    pairs = tile // LANES           # a thread's columns of a score tile
    columns = depth_padded // LANES  # a thread's columns of an output tile
    width = depth_padded + 1         # shared rows padded by a float (a plain constant)
    weights_width = tile + 1

    @cuda.jit(device=True)
    def scores(left, right, row, lane, depth, out):
        """out[i, j] = left[row + 16 i] . right[lane + 8 j] over the first `depth` columns."""
        for i in range(rows):
            for j in range(pairs):
                out[i, j] = 0.0
        for d in range(depth):
            for i in range(rows):
                left_value = left[row + i * ROW_GROUPS, d]
                for j in range(pairs):
                    out[i, j] += left_value * right[lane + j * LANES, d]

    @cuda.jit(device=True)
    def accumulate(weights, values, row, lane, out):
        """out[i, c] += sum_j weights[row + 16 i, j] values[j, lane + 8 c]."""
        for j in range(tile):
            for i in range(rows):
                weight = weights[row + i * ROW_GROUPS, j]
                for c in range(columns):
                    out[i, c] += weight * values[j, lane + c * LANES]

    @cuda.jit(device=True)
    def store_rows(out, factor, head, first_row, row, lane, x):
        """x[head, first_row + row + 16 i, lane + 8 c] = factor out[i, c], inside x only."""
        for i in range(rows):
            r = first_row + row + i * ROW_GROUPS
            for c in range(columns):
                d = lane + c * LANES
                if r < x.shape[1] and d < x.shape[2]:
                    x[head, r, d] = factor * out[i, c]

    @cuda.jit
    def keys_kernel(q, k, v, do, lse, delta, causal, scale, dk, dv):
        k_tile = cuda.shared.array((tile, width), float32)
        v_tile = cuda.shared.array((tile, width), float32)
        q_tile = cuda.shared.array((tile, width), float32)
        do_tile = cuda.shared.array((tile, width), float32)
        lse_tile = cuda.shared.array(tile, float32)
        delta_tile = cuda.shared.array(tile, float32)
        weights = cuda.shared.array((tile, weights_width), float32)   # p^T, then ds^T
        s = cuda.local.array((rows, pairs), float32)
        dp = cuda.local.array((rows, pairs), float32)
        dk_out = cuda.local.array((rows, columns), float32)
        dv_out = cuda.local.array((rows, columns), float32)
        head, first_key = cuda.blockIdx.y, cuda.blockIdx.x * tile
        thread = cuda.threadIdx.x & (THREADS - 1)   # masked: >= 0 to LLVM, see matmul.py
        row, lane = thread // LANES, thread % LANES
        n_queries, depth = q.shape[1], q.shape[2]
        n_keys = k.shape[1]
        offset = n_keys - n_queries
        for i in range(rows):
            for c in range(columns):
                dk_out[i, c] = 0.0
                dv_out[i, c] = 0.0
        load_rows(k[head], first_key, k_tile, thread)
        load_rows(v[head], first_key, v_tile, thread)
        # causal: the first query that sees this tile's first key is first_key - offset
        start = larger(0, first_key - offset) // tile * tile if causal else 0
        for first_query in range(start, n_queries, tile):
            load_rows(q[head], first_query, q_tile, thread)
            load_rows(do[head], first_query, do_tile, thread)
            load_vector(lse[head], first_query, lse_tile, thread)
            load_vector(delta[head], first_query, delta_tile, thread)
            cuda.syncthreads()
            scores(k_tile, q_tile, row, lane, depth, s)
            scores(v_tile, do_tile, row, lane, depth, dp)
            for i in range(rows):
                key = first_key + row + i * ROW_GROUPS
                for j in range(pairs):
                    query = first_query + lane + j * LANES
                    p = float32(0.0)
                    if query < n_queries and not hidden(query, key, n_keys, offset, causal):
                        p = math.exp(s[i, j] * scale - lse_tile[lane + j * LANES])
                    weights[row + i * ROW_GROUPS, lane + j * LANES] = p
                    dp[i, j] = p * (dp[i, j] - delta_tile[lane + j * LANES])   # ds^T
            cuda.syncthreads()
            accumulate(weights, do_tile, row, lane, dv_out)
            cuda.syncthreads()
            for i in range(rows):
                for j in range(pairs):
                    weights[row + i * ROW_GROUPS, lane + j * LANES] = dp[i, j]
            cuda.syncthreads()
            accumulate(weights, q_tile, row, lane, dk_out)
            cuda.syncthreads()
        store_rows(dk_out, scale, head, first_key, row, lane, dk)
        store_rows(dv_out, float32(1.0), head, first_key, row, lane, dv)

    @cuda.jit
    def queries_kernel(q, k, v, do, lse, delta, causal, scale, dq):
        q_tile = cuda.shared.array((tile, width), float32)
        do_tile = cuda.shared.array((tile, width), float32)
        k_tile = cuda.shared.array((tile, width), float32)
        v_tile = cuda.shared.array((tile, width), float32)
        weights = cuda.shared.array((tile, weights_width), float32)   # ds
        s = cuda.local.array((rows, pairs), float32)
        dp = cuda.local.array((rows, pairs), float32)
        dq_out = cuda.local.array((rows, columns), float32)
        row_lse = cuda.local.array(rows, float32)
        row_delta = cuda.local.array(rows, float32)
        head, first_query = cuda.blockIdx.y, cuda.blockIdx.x * tile
        thread = cuda.threadIdx.x & (THREADS - 1)   # masked: >= 0 to LLVM, see matmul.py
        row, lane = thread // LANES, thread % LANES
        n_queries, depth = q.shape[1], q.shape[2]
        n_keys = k.shape[1]
        offset = n_keys - n_queries
        for i in range(rows):
            query = smaller(first_query + row + i * ROW_GROUPS, n_queries - 1)
            row_lse[i] = lse[head, query]
            row_delta[i] = delta[head, query]
            for c in range(columns):
                dq_out[i, c] = 0.0
        load_rows(q[head], first_query, q_tile, thread)
        load_rows(do[head], first_query, do_tile, thread)
        last_query = smaller(first_query + tile, n_queries) - 1
        end = smaller(n_keys, last_query + offset + 1) if causal else n_keys
        for first_key in range(0, end, tile):
            load_rows(k[head], first_key, k_tile, thread)
            load_rows(v[head], first_key, v_tile, thread)
            cuda.syncthreads()
            scores(q_tile, k_tile, row, lane, depth, s)
            scores(do_tile, v_tile, row, lane, depth, dp)
            for i in range(rows):
                query = first_query + row + i * ROW_GROUPS
                for j in range(pairs):
                    p = float32(0.0)
                    if not hidden(query, first_key + lane + j * LANES, n_keys, offset, causal):
                        p = math.exp(s[i, j] * scale - row_lse[i])
                    weights[row + i * ROW_GROUPS, lane + j * LANES] = p * (dp[i, j] - row_delta[i])
            cuda.syncthreads()
            accumulate(weights, k_tile, row, lane, dq_out)
            cuda.syncthreads()
        store_rows(dq_out, scale, head, first_query, row, lane, dq)

    return keys_kernel, queries_kernel


# do, q, o (B, H, Tq, D), k, v (B, H, Tk, D), lse (B, H, Tq): float32 device arrays
#   -> dq (B, H, Tq, D), dk, dv (B, H, Tk, D): float32 device arrays
def attention_backward(do, q, k, v, o, lse, causal, scale):
    batch, heads, n_queries, depth = q.shape
    n_keys = k.shape[2]
    per_head = batch * heads
    check_grid_y(per_head, f"q: B * H = {per_head} is past the {GRID_Y_MAX} heads one launch covers")
    depth_padded = padded_depth(depth)
    tile = tile_size(depth_padded)
    keys_kernel, queries_kernel = backward_kernels(depth_padded)
    q3, do3 = (x.reshape(per_head, n_queries, depth) for x in (q, do))
    k3, v3 = (x.reshape(per_head, n_keys, depth) for x in (k, v))
    lse2 = lse.reshape(per_head, n_queries)
    delta = device_array((per_head, n_queries), np.float32)
    rows = per_head * n_queries
    delta_kernel[-(-rows // DELTA_THREADS), DELTA_THREADS](
        do.reshape(rows, depth), o.reshape(rows, depth), delta.reshape(rows))
    dq = device_array(q.shape, np.float32)
    dk = device_array(k.shape, np.float32)
    dv = device_array(k.shape, np.float32)
    arguments = (q3, k3, v3, do3, lse2, delta, bool(causal), np.float32(scale))
    keys_kernel[(-(-n_keys // tile), per_head), THREADS](
        *arguments, dk.reshape(per_head, n_keys, depth), dv.reshape(per_head, n_keys, depth))
    queries_kernel[(-(-n_queries // tile), per_head), THREADS](
        *arguments, dq.reshape(per_head, n_queries, depth))
    return dq, dk, dv
