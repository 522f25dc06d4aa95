"""Attention forward on the GPU (numba.cuda), flash style: o = softmax(scale q k^T + mask) v.

Shapes: q (B, H, Tq, D); k, v (B, H, Tk, D); o (B, H, Tq, D); lse (B, H, Tq), float32 device
arrays, where lse_i = log sum_j exp(scale q_i.k_j) over the keys query i sees (the backward
recomputes the probabilities from it). The causal rule is the CPU kernel's
(attention_forward.py): query i sees key j iff j <= i + (Tk - Tq), aligned bottom-right.
Cost: 4 B H Tq Tk D FLOPs (about half with the causal mask) and B H Tq Tk exps; at best
4 B H (2 Tq + 2 Tk) D bytes moved: the Tq x Tk scores never reach memory.

Fast version, FlashAttention's tiling with CUDA threads:
  one block of 128 threads per (batch * head, tile of QUERY_TILE queries); the q tile sits in
  shared memory for the whole block, and for each tile of KEY_TILE keys (up to the tile's last
  diagonal key when causal):
    the k tile comes into shared memory; each thread computes a register tile of the scores,
    rows (queries) t // 8 + 16 i, columns (keys) t % 8 + 8 j: the 8 threads sharing a row are
    neighbouring lanes of one warp, so the row max is 3 butterfly shuffles;
    online softmax: new row max m', the running sum and the thread's rows of o rescaled by
    exp(m - m'), p = exp(s - m') into shared memory;
    the v tile replaces the k tile in shared memory, and o (the thread's rows, columns
    t % 8 + 8 c) += p v_tile, from registers;
  then o / row sum and lse = m' + log(row sum).
Shared tiles are row-major with one float of padding per row, so both the row and the column
reads of a warp fall in different banks. One kernel per padded depth (8, 16, ..., MAX_DEPTH) is
compiled on first use, its tile sizes and register tiles constants. The CUDA simulator has no
warp intrinsics, so there (WARP_SHUFFLE false) the 8 lanes of a row exchange values through
shared memory instead. The module-level device functions do not touch `cuda.*`, so the
backward can share them under the simulator too (see layer_norm.py for why that matters).
The plain reference is the CPU kernel's `attention_forward_reference`.
"""

import functools
import math

import numba
import numpy as np
from numba import cuda, float32

from pyai.kernels.numba_cpu.attention_forward import attention_forward_reference  # noqa: F401
from pyai.kernels.numba_cuda import GRID_Y_MAX, check_grid_y
from pyai.kernels.numba_cuda.buffers import device_array

THREADS = 128
LANES = 8                      # threads sharing a row of a tile: neighbouring lanes of a warp
ROW_GROUPS = THREADS // LANES  # 16: a thread's rows are t // LANES + ROW_GROUPS i
KEY_TILE = 32                  # keys per step
PADDED_KEY_TILE = KEY_TILE + 1  # shared rows of p padded by a float: no bank conflicts
MAX_DEPTH = 128                # the largest head depth D: shared memory holds a few 32 x 128 tiles
FULL_MASK = 0xFFFFFFFF
WARP_SHUFFLE = not numba.config.ENABLE_CUDASIM


def padded_depth(depth):
    """The depth a kernel is compiled for: a power of two from LANES to MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise ValueError(f"q: the numba-cuda attention supports a head depth D of up to "
                         f"{MAX_DEPTH}, got {depth}")
    return max(LANES, 1 << (depth - 1).bit_length())


def query_tile(depth_padded):
    """Queries per block: 64, or 32 at depth 128, so the tiles fit the 48 KB of shared memory."""
    return 64 if depth_padded <= 64 else 32


@cuda.jit(device=True)
def load_rows(x, first_row, tile, thread):
    """tile[r, d] = x[first_row + r, d], zero past x's rows and columns. x is one head's (T, D);
    tile is (rows, depth_padded + 1), depth_padded a power of two <= THREADS. Neighbouring
    threads read neighbouring floats of a row."""
    width = tile.shape[1] - 1
    d = thread % width
    for r in range(thread // width, tile.shape[0], THREADS // width):
        row = first_row + r
        tile[r, d] = x[row, d] if row < x.shape[0] and d < x.shape[1] else float32(0.0)


@cuda.jit(device=True)
def larger(a, b):
    """max(a, b): numba 0.66+ cannot compile the builtin two-argument max and min for CUDA
    (numba issue #10753)."""
    return a if a > b else b


@cuda.jit(device=True)
def smaller(a, b):
    return a if a < b else b


@cuda.jit(device=True)
def hidden(query, key, n_keys, offset, causal):
    """Whether `key` is masked for `query`: past the last key or, causal, past the diagonal."""
    return key >= n_keys or (causal and key > query + offset)


@functools.cache
def forward_kernel(depth_padded):
    """The kernel for one padded depth, compiled on its first launch."""
    block_queries = query_tile(depth_padded)
    rows = block_queries // ROW_GROUPS      # a thread's queries
    keys = KEY_TILE // LANES                # a thread's keys in a score tile
    columns = depth_padded // LANES         # a thread's columns of o
    width = depth_padded + 1                # shared rows padded by a float (a plain constant)

    @cuda.jit(device=True)
    def lanes_combine(values, exchange, row, lane, take_max):
        """values[i] becomes the max (or sum) over the LANES threads sharing row + 16 i."""
        if WARP_SHUFFLE:
            for i in range(rows):
                for offset in (4, 2, 1):
                    other = cuda.shfl_xor_sync(FULL_MASK, values[i], offset)
                    values[i] = larger(values[i], other) if take_max else values[i] + other
        else:
            for i in range(rows):
                exchange[row + i * ROW_GROUPS, lane] = values[i]
            cuda.syncthreads()
            for i in range(rows):
                result = exchange[row + i * ROW_GROUPS, 0]
                for other in range(1, LANES):
                    value = exchange[row + i * ROW_GROUPS, other]
                    result = larger(result, value) if take_max else result + value
                values[i] = result
            cuda.syncthreads()

    @cuda.jit
    def forward(q, k, v, causal, scale, o, lse):
        q_tile = cuda.shared.array((block_queries, width), float32)
        kv_tile = cuda.shared.array((KEY_TILE, width), float32)
        p_tile = cuda.shared.array((block_queries, PADDED_KEY_TILE), float32)
        exchange = cuda.shared.array((block_queries, LANES), float32)   # simulator path only
        s = cuda.local.array((rows, keys), float32)
        out = cuda.local.array((rows, columns), float32)
        row_max = cuda.local.array(rows, float32)
        row_sum = cuda.local.array(rows, float32)
        tile_max = cuda.local.array(rows, float32)
        head, first_query = cuda.blockIdx.y, cuda.blockIdx.x * block_queries
        thread = cuda.threadIdx.x & (THREADS - 1)   # masked: >= 0 to LLVM, see matmul.py
        row, lane = thread // LANES, thread % LANES
        n_queries, depth = q.shape[1], q.shape[2]
        n_keys = k.shape[1]
        offset = n_keys - n_queries
        for i in range(rows):
            row_max[i] = -math.inf
            row_sum[i] = 0.0
            for c in range(columns):
                out[i, c] = 0.0
        load_rows(q[head], first_query, q_tile, thread)
        last_query = smaller(first_query + block_queries, n_queries) - 1
        end = smaller(n_keys, last_query + offset + 1) if causal else n_keys
        for first_key in range(0, end, KEY_TILE):
            load_rows(k[head], first_key, kv_tile, thread)
            cuda.syncthreads()
            # s = scale q k^T on this thread's (query, key) pairs, -inf where hidden
            for i in range(rows):
                for j in range(keys):
                    s[i, j] = 0.0
            for d in range(depth):
                for i in range(rows):
                    q_value = q_tile[row + i * ROW_GROUPS, d]
                    for j in range(keys):
                        s[i, j] += q_value * kv_tile[lane + j * LANES, d]
            for i in range(rows):
                tile_max[i] = -math.inf
                for j in range(keys):
                    query = first_query + row + i * ROW_GROUPS
                    if hidden(query, first_key + lane + j * LANES, n_keys, offset, causal):
                        s[i, j] = -math.inf
                    else:
                        s[i, j] *= scale
                    tile_max[i] = larger(tile_max[i], s[i, j])
            lanes_combine(tile_max, exchange, row, lane, True)
            # online softmax; every row sees key 0 in the first tile, so the new max is finite
            for i in range(rows):
                new_max = larger(row_max[i], tile_max[i])
                correction = math.exp(row_max[i] - new_max)
                row_max[i] = new_max
                total = float32(0.0)
                for j in range(keys):
                    p = math.exp(s[i, j] - new_max)
                    p_tile[row + i * ROW_GROUPS, lane + j * LANES] = p
                    total += p
                row_sum[i] = row_sum[i] * correction + total
                for c in range(columns):
                    out[i, c] *= correction
            cuda.syncthreads()
            load_rows(v[head], first_key, kv_tile, thread)
            cuda.syncthreads()
            for j in range(KEY_TILE):
                for i in range(rows):
                    p = p_tile[row + i * ROW_GROUPS, j]
                    for c in range(columns):
                        out[i, c] += p * kv_tile[j, lane + c * LANES]
            cuda.syncthreads()
        lanes_combine(row_sum, exchange, row, lane, False)
        for i in range(rows):
            query = first_query + row + i * ROW_GROUPS
            if query < n_queries:
                for c in range(columns):
                    d = lane + c * LANES
                    if d < depth:
                        o[head, query, d] = out[i, c] / row_sum[i]
                if lane == 0:
                    lse[head, query] = row_max[i] + math.log(row_sum[i])

    return forward


# q (B, H, Tq, D), k and v (B, H, Tk, D): float32 device arrays, D <= MAX_DEPTH
#   -> o (B, H, Tq, D), lse (B, H, Tq): float32 device arrays
def attention_forward(q, k, v, causal, scale):
    batch, heads, n_queries, depth = q.shape
    n_keys = k.shape[2]
    per_head = batch * heads
    check_grid_y(per_head, f"q: B * H = {per_head} is past the {GRID_Y_MAX} heads one launch covers")
    kernel = forward_kernel(padded_depth(depth))
    o = device_array(q.shape, np.float32)
    lse = device_array(q.shape[:3], np.float32)
    grid = (-(-n_queries // query_tile(padded_depth(depth))), per_head)
    kernel[grid, THREADS](q.reshape(per_head, n_queries, depth),
                          k.reshape(per_head, n_keys, depth), v.reshape(per_head, n_keys, depth),
                          bool(causal), np.float32(scale), o.reshape(per_head, n_queries, depth),
                          lse.reshape(per_head, n_queries))
    return o, lse
