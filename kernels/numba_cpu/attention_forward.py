"""Attention forward, flash style: o = softmax(scale q k^T + mask) v, float32, on the CPU.

Shapes: q (B, H, Tq, D); k, v (B, H, Tk, D); o (B, H, Tq, D); lse (B, H, Tq), where
    lse_i = log sum_j exp(scale q_i.k_j)   (natural log, over the keys query i sees)
is what the backward needs to recompute the probabilities without storing them.
Causal mask, aligned bottom-right (as FlashAttention-2, and tf.linalg.band_part on the last Tq
rows of a Tk x Tk mask): query i sees key j iff j <= i + (Tk - Tq). With Tq == Tk that is the
usual lower triangle; the last query always sees every key. pyai.ops refuses causal with
Tq > Tk, where the first queries would see no key at all.
Cost: 4 B H Tq Tk D FLOPs (about half with the causal mask) and B H Tq Tk exps; at best
4 B H (2 Tq + 2 Tk) D bytes moved: the Tq x Tk scores never reach memory.

The exps are powers of two, as in FlashAttention: q is scaled by scale log2(e), so the scores
come out in base-2 units, s2 = s log2(e), and p = 2^(s2 - m2) = exp(s - m) (sigmoid.py's
exp2_lanes: 10 vector operations an exp with AVX-512, 13 without, against 20 for exp(-a); at
D = 64 the online softmax had taken 17% of the forward, and a tile's now takes 0.56x the time). lse goes out in
natural units, m2 ln 2 + log(sum).

Fast version, FlashAttention-2's loop order on CPU cores:
  pack once (in parallel over heads): q * scale log2(e) as 16-query slivers (D x 16), k as 6-key
  slivers (D x 6), v as 6-column chunks (Tk x 6): the operand layouts of matmul's 6 x 16
  micro-kernel
  in parallel over tasks, one per (batch, head, block of QUERY_BLOCK queries):
    for each tile of KEY_TILE keys (causal: up to the block's last diagonal key, and each
    sliver of NR queries only up to its own last query's):
      scores^T (KEY_TILE x QUERY_BLOCK) = k_tile (q_block * scale log2(e))^T    micro-kernel, kc = D
      online softmax: new row max m', then the running sum and o rescaled by 2^(m - m'),
      p = 2^(s - m') in place of the scores
      o^T (D x QUERY_BLOCK) += v_tile^T p^T                   micro-kernel, kc = KEY_TILE
    o = o^T / row sum, lse = row max ln 2 + log(row sum)
A tile with no key masked (all but a short last tile and, causal, those the diagonal cuts) takes
the first two steps at once (tile_exps): each MR x NR tile of scores becomes p in registers,
against a running max that may trail the true one by LAG and moves only when passed.
The scores are kept transposed (keys down, queries across), so the max, the exps and the
rescaling run down columns with 16 queries in a SIMD register and no horizontal reductions,
and p^T is already the right operand the second product reads. Memory: O(QUERY_BLOCK x
(KEY_TILE + D)) per task and O((Tq + Tk) D) for the packed copies; never O(Tq Tk).

The kernels read q, k, v and write o through `Rows`: one head's (T, D) matrix as the rows
start + t * stride of a flat array, with a start per head. So the same kernels take (B, H, T, D)
arrays (stride D) and a projection's (B, T, 3, H, D) output as it is (`attention_qkv_forward`:
stride 3 H D), and write o as (B, T, H, D) there, the merged heads an output projection reads;
packing reads the strided rows as cheaply as contiguous ones.
"""

import functools
import math

import numba
import numpy as np
from numba import boolean, float32, int64, void

from pyai.kernels.numba_cpu import matmul_micro, memory
from pyai.kernels.numba_cpu.matmul_micro import MR, NR, ROWS_PER_GROUP, consecutive, short_kernel_strided, tile_product
from pyai.kernels.numba_cpu.sigmoid import LOG2_OF_E, exp2_lanes   # 2^b lane by lane; 2^-inf = 0
from pyai.kernels.numba_cpu.simd import (WIDTH, add, aligned_floats, any_greater, fill_first_lanes, first_lanes, fma,
                                        load, maximum, multiply, prefetch, slp_vectorize, splat, store, subtract,
                                        transpose_square, zeros)

micro_kernel = matmul_micro.micro_kernel   # c[MR x NR] += a_sliver^T b_sliver

QUERY_BLOCK = 64   # queries per task, a multiple of NR: their o^T and scores^T stay in L1/L2
KEY_TILE = 192    # keys per tile, a multiple of MR
LINE = 16         # floats in a cache line
LAG = 8.0         # base-2 units: how far a fused tile's running max may trail the scores (p <= 2^LAG)
FASTMATH = {"contract"}   # FMAs only: no reassociation, infinities kept (the mask is -inf)


def attention_forward_reference(q, k, v, causal, scale):
    """float64 numpy, the whole score matrix at once: (o, lse)."""
    s = scale * np.einsum("bhid,bhjd->bhij", q.astype(np.float64), k.astype(np.float64))
    if causal:
        n_queries, n_keys = s.shape[-2:]
        visible = np.arange(n_keys) <= np.arange(n_queries)[:, None] + (n_keys - n_queries)
        s = np.where(visible, s, -np.inf)
    row_max = s.max(-1, keepdims=True)
    e = np.exp(s - row_max)
    total = e.sum(-1, keepdims=True)
    return (e / total) @ v.astype(np.float64), (row_max + np.log(total))[..., 0]


@numba.njit(inline="always", cache=True)
def scale_floats(x, start, count, factor):
    """x[start:start + count] *= factor, by vectors."""
    whole = count // WIDTH * WIDTH
    for i in range(start, start + whole, WIDTH):
        store(x, i, multiply(load(x, i), splat(factor)))
    for i in range(start + whole, start + count):
        x.reshape(-1)[i] *= factor


@numba.njit(cache=True)
def pack_slivers(x, start, stride, rows, width, factor, packed):
    """packed[s, d, r] = factor * X[s*width + r, d] (rows in slivers, transposed), zero past
    the last row, where X (rows, D) is row t = x[start + t * stride:][:D] of the flat array x;
    packed is (slivers, D, width).

    A sliver whose rows (WIDTH of them, when a sliver is narrower) all lie in x is turned WIDTH x
    WIDTH floats at a time in registers (simd.transpose_square). Slivers narrower than WIDTH
    (MR = 12 with 16-float vectors) take whole-vector stores that spill into the next packed
    row, which a later store overwrites: the next d of this sliver, or after its last d the next
    sliver's first (packed after it, and there is one, since this sliver's WIDTH rows exist)."""
    depth = packed.shape[1]
    squares = depth // WIDTH * WIDTH
    for s in range(packed.shape[0]):
        first = s * width
        if first + max(width, WIDTH) <= rows:
            for half in range(0, width, WIDTH):
                for d0 in range(0, squares, WIDTH):
                    transpose_square(x, start + (first + half) * stride + d0, stride, packed,
                                     (s * depth + d0) * width + half, width)
            for r in range(width):
                for d in range(squares, depth):
                    packed[s, d, r] = x[start + (first + r) * stride + d]
            if factor != 1:
                scale_floats(packed, s * depth * width, depth * width, factor)
        else:
            for r in range(width):
                row = first + r
                for d in range(depth):
                    packed[s, d, r] = factor * x[start + row * stride + d] if row < rows else 0


@numba.njit(inline="always", cache=True)
def chunk_columns(c, chunks, depth, width):
    """(first column, columns held) of chunk c of D's `width`-column chunks: the columns after
    whole chunks go in the last one, except where MR = 12 chunks leave 4 (D = 16, 28, ..., 64,
    76, ...): then D's last 16 columns are split 8 + 8, since the tiles of two 8-row chunks
    (matmul_micro.eight_kernel_strided) cost less than a whole tile and a half one (attention's
    values product at 1 x 8 x 1024 x 64, one core of an Intel Xeon, family 6 model 167:
    176-179 -> 187-190 GFLOP/s; the whole forward and backward there on two cores, alternating
    with the tiles before in one process, 0.986x and 0.974x the time, the same floats)."""
    last = chunks - 1
    held = depth - last * width
    if width == MR == 12 and held == 4 and last > 0 and c >= last - 1:
        return depth - 16 + 8 * (c - last + 1), 8
    return c * width, (held if c == last else width)


@numba.njit(cache=True)
def pack_chunks(x, start, stride, rows, depth, width, packed):
    """packed[c, i, r] = X[i, first + r] (columns in chunks, chunk c from column first of
    chunk_columns), zero past the last row or column, X (rows, depth) as in pack_slivers; packed
    is (chunks, padded rows, width). A row of X at a time, each chunk's part by whole vectors, the
    lanes past the last column zeroed (first_lanes); chunks narrower than WIDTH by one vector that
    reads past the chunk (inside x) and spills into the chunk's next packed row, written after it.
    The rest a float at a time: the last packed row (its spill would fall on the next chunk's
    first row) and rows whose vectors would read past x; padding rows are stored zero vectors.
    (Chunk by chunk, the chunk past D a float at a time in every row, the 128 x 32 of a GPT head
    in 6-float chunks took 5.6 us on an AMD EPYC Zen 3 core; a row at a time by vectors, 1.8.)"""
    chunks, padded_rows = packed.shape[0], packed.shape[1]
    span = max(width, WIDTH)
    last_first = chunk_columns(chunks - 1, chunks, depth, width)[0]   # the others start at c width
    reach = last_first + span   # floats a row's vectors read from its start
    vector_rows = max(0, min(rows, padded_rows - 1, (x.size - start - reach) // stride + 1))
    for i in range(vector_rows):
        row = start + i * stride
        for c in range(chunks):
            first = c * width if c < chunks - 1 else last_first
            for half in range(0, span, WIDTH):
                store(packed, (c * padded_rows + i) * width + half,
                      first_lanes(load(x, row + first + half), depth - first - half))
    for i in range(vector_rows, padded_rows):
        for c in range(chunks):
            if rows <= i < padded_rows - 1:   # padding: zeros, spilling as above
                for half in range(0, span, WIDTH):
                    store(packed, (c * padded_rows + i) * width + half, zeros())
                continue
            first = c * width if c < chunks - 1 else last_first
            for r in range(width):
                column = first + r
                packed[c, i, r] = x[start + i * stride + column] if i < rows and column < depth else 0


@numba.njit(cache=True)
def prefetch_rows(x, head, rows, depth):
    """Ask for the cache lines of one head's (rows, depth) matrix of Rows x. A head's rows in a
    projection's (B, T, 3, H, D) output are a few lines each, strides apart: too short a stream for
    the prefetchers, so packing a head from L3 waits on every line in turn; asked for a head
    ahead, they come while the head before is multiplied."""
    flat, stride, starts = x
    for i in range(rows):
        row = starts[head] + i * stride
        for d in range(0, depth, LINE):
            prefetch(flat, row + d)
        prefetch(flat, row + depth - 1)


@numba.njit(cache=True)
def pack_head(q, k, v, head, n_queries, n_keys, q_factor, q_slivers, k_slivers, v_chunks):
    """One head's packed operands, q times q_factor. q, k, v are Rows: (flat array, row stride,
    start per head)."""
    pack_slivers(q[0], q[2][head], q[1], n_queries, NR, q_factor, q_slivers)
    pack_slivers(k[0], k[2][head], k[1], n_keys, MR, np.float32(1), k_slivers)
    pack_chunks(v[0], v[2][head], v[1], n_keys, q_slivers.shape[1], MR, v_chunks)


@numba.njit(parallel=True, cache=True)
def pack_operands(q, k, v, n_queries, n_keys, q_factor, q_slivers, k_slivers, v_chunks):
    """Every head's packed operands, in one parallel region (one task per head): on a busy
    machine each region's closing barrier waits for the slowest thread, so they are kept few."""
    for head in numba.prange(q_slivers.shape[0]):
        pack_head(q, k, v, head, n_queries, n_keys, q_factor, q_slivers[head], k_slivers[head], v_chunks[head])


# The loops over a block's tiles make no array, so they run without Numba's reference counts
# (_nrt=False), as matmul's tile loops do (matmul.py says why): they had taken 2% of the forward's
# samples (perf, 1 x 8 x 1024 x 64); the GPT's heads (16 x 4 x 128 x 32) ran 1-2% faster without
# (Intel Xeon, family 6 model 167, two threads, old and new alternating in one process)
@numba.njit(fastmath=FASTMATH, cache=True, _nrt=False)
def tile_scores(q_slivers, k_slivers, first_query, first_key, keys, scores):
    """scores[t, j, c] = scale log2(e) q[first_query + NR t + c] . k[first_key + j], for the first
    keys[t] keys (a multiple of MR) of the tile in query sliver t."""
    for t in range(len(keys)):
        for s in range(keys[t] // MR):
            micro_kernel(k_slivers[first_key // MR + s], q_slivers[first_query // NR + t],
                         scores[t], s * MR, 0, False)


@numba.njit(cache=True, _nrt=False)
def mask_tile(scores, first_query, first_key, keys, n_keys, offset, causal):
    """-inf where the key is past the last one or, causal, past the query's diagonal. In row j
    of sliver t those are the first `hidden` lanes: the queries too early to see key j, set a
    vector at a time (simd.fill_first_lanes), in the rows from the sliver's first query's
    diagonal on. (A float at a time in every row, it had taken ~11% of the GPT's causal forward,
    64 heads of 128 x 32 on one core of an AMD EPYC Zen 4: 170 of 1490 us; the whole call,
    best of 200, 1435-1713 -> 1349-1375 us.)"""
    for t in range(len(keys)):
        diagonal = offset + first_query + t * NR   # the last key the sliver's first query sees
        first_hidden = diagonal + 1 if causal else n_keys
        for j in range(max(0, first_hidden - first_key), keys[t]):
            key = first_key + j
            hidden = NR if key >= n_keys else key - diagonal
            at = (t * scores.shape[1] + j) * NR
            for lane in range(0, min(NR, hidden), WIDTH):
                store(scores, at + lane, fill_first_lanes(load(scores, at + lane), hidden - lane, -np.inf))


@numba.njit(cache=True)
def scale_rows(x, start, count, left, right):
    """x's rows of NR floats from float `start`, `count` of them, times (left, right) lane by lane."""
    for i in range(start, start + count * NR, NR):
        store(x, i, multiply(load(x, i), left))
        store(x, i + WIDTH, multiply(load(x, i + WIDTH), right))


@numba.njit(cache=True, _nrt=False)
def online_softmax(scores, keys, row_max, row_sum, out):
    """p = 2^(s - m') in place of the scores (base-2 units), m' the new running max; the running
    sum and the output so far are rescaled by 2^(m - m'), which is 0 before the first key (m = -inf).
    A sliver's NR queries are two SIMD vectors (left, right), worked on side by side; sliver t
    takes the tile's first keys[t] keys (none: it sees none of them, and is left as it is)."""
    for t in range(len(keys)):
        if keys[t] == 0:
            continue
        tile = t * scores.shape[1] * NR
        old_left, old_right = load(row_max, t * NR), load(row_max, t * NR + WIDTH)
        left, right = old_left, old_right
        for j in range(keys[t]):
            left = maximum(left, load(scores, tile + j * NR))
            right = maximum(right, load(scores, tile + j * NR + WIDTH))
        total_left, total_right = zeros(), zeros()
        for j in range(keys[t]):
            p_left = exp2_lanes(subtract(load(scores, tile + j * NR), left))
            p_right = exp2_lanes(subtract(load(scores, tile + j * NR + WIDTH), right))
            store(scores, tile + j * NR, p_left)
            store(scores, tile + j * NR + WIDTH, p_right)
            total_left, total_right = add(total_left, p_left), add(total_right, p_right)
        correction_left = exp2_lanes(subtract(old_left, left))
        correction_right = exp2_lanes(subtract(old_right, right))
        scale_rows(out, t * out.shape[1] * NR, out.shape[1], correction_left, correction_right)
        store(row_sum, t * NR, fma(load(row_sum, t * NR), correction_left, total_left))
        store(row_sum, t * NR + WIDTH, fma(load(row_sum, t * NR + WIDTH), correction_right, total_right))
        store(row_max, t * NR, left)
        store(row_max, t * NR + WIDTH, right)


@numba.njit(inline="always", cache=True)
def group_high(acc):
    """The lane-by-lane max of a group of 6 rows' accumulators (row 0 left, row 0 right, ...):
    (left, right)."""
    left = maximum(maximum(maximum(acc[0], acc[2]), maximum(acc[4], acc[6])), maximum(acc[8], acc[10]))
    right = maximum(maximum(maximum(acc[1], acc[3]), maximum(acc[5], acc[7])), maximum(acc[9], acc[11]))
    return left, right


@numba.njit(inline="always", cache=True)
def store_exp_row(scores, at, left, right, high, totals):
    """p = 2^(s - m) of one row of scores s in registers (left, right), stored at float `at`;
    the running sums (totals) plus the p."""
    p_left = exp2_lanes(subtract(left, high[0]))
    p_right = exp2_lanes(subtract(right, high[1]))
    store(scores, at, p_left)
    store(scores, at + WIDTH, p_right)
    return add(totals[0], p_left), add(totals[1], p_right)


@numba.njit(inline="always", cache=True)
def store_six_exps(scores, at, acc, high, totals):
    """store_exp_row for a group of 6 rows' accumulators, to rows of NR floats from float `at`."""
    totals = store_exp_row(scores, at, acc[0], acc[1], high, totals)
    totals = store_exp_row(scores, at + NR, acc[2], acc[3], high, totals)
    totals = store_exp_row(scores, at + 2 * NR, acc[4], acc[5], high, totals)
    totals = store_exp_row(scores, at + 3 * NR, acc[6], acc[7], high, totals)
    totals = store_exp_row(scores, at + 4 * NR, acc[8], acc[9], high, totals)
    return store_exp_row(scores, at + 5 * NR, acc[10], acc[11], high, totals)


@numba.njit(fastmath=FASTMATH, cache=True, _nrt=False)
def tile_exps(q_slivers, k_slivers, first_query, first_key, keys, scores, row_max, row_sum, out):
    """tile_scores and online_softmax in one pass, for a tile with no key masked: each MR x NR
    tile of scores is turned into p = 2^(s - m) in registers as it comes out of the micro-kernel,
    never stored and read back as scores. m is a running max that may trail the true one by up to
    LAG (FlashAttention-4's lazy rescaling): the tile's max, one operation a vector, is only
    compared with m + LAG, and m moves (the p so far in the tile, the sum and o rescaled, as
    online_softmax does) only when a score passes it, before the first key (m = -inf) and rarely
    after. p <= 2^LAG, the same softmax for any m: lse = m ln 2 + log(sum) whatever m is.
    (Two cores of an Intel Xeon, family 6 model 167, the forward alternating with the separate
    passes' in one process, median of 25 bests: 1 x 8 x 1024 x 64 0.933 of the time, causal
    0.959, D = 128 0.967, T = 2048 0.947.)"""
    depth = q_slivers.shape[1]
    lag = splat(np.float32(LAG))
    for t in range(len(keys)):
        high = (load(row_max, t * NR), load(row_max, t * NR + WIDTH))
        totals = (zeros(), zeros())
        correction = (splat(np.float32(1)), splat(np.float32(1)))
        moved = False
        for s in range(keys[t] // MR):
            top, bottom = tile_product(k_slivers[first_key // MR + s], 0, depth, q_slivers[first_query // NR + t], 0,
                                       NR, scores[t], consecutive(s * MR), 0)
            left, right = group_high(top)
            if MR == 2 * ROWS_PER_GROUP:
                bottom_left, bottom_right = group_high(bottom)
                left, right = maximum(left, bottom_left), maximum(right, bottom_right)
            if any_greater(left, add(high[0], lag)) or any_greater(right, add(high[1], lag)):
                new = (maximum(high[0], left), maximum(high[1], right))
                shrink = (exp2_lanes(subtract(high[0], new[0])), exp2_lanes(subtract(high[1], new[1])))
                scale_rows(scores, t * scores.shape[1] * NR, s * MR, shrink[0], shrink[1])
                totals = (multiply(totals[0], shrink[0]), multiply(totals[1], shrink[1]))
                correction = (multiply(correction[0], shrink[0]), multiply(correction[1], shrink[1]))
                high, moved = new, True
            at = (t * scores.shape[1] + s * MR) * NR
            totals = store_six_exps(scores, at, top, high, totals)
            if MR == 2 * ROWS_PER_GROUP:
                totals = store_six_exps(scores, at + ROWS_PER_GROUP * NR, bottom, high, totals)
        for half in range(2):
            at = t * NR + half * WIDTH
            store(row_sum, at, fma(load(row_sum, at), correction[half], totals[half]))
            store(row_max, at, high[half])
        if moved:
            scale_rows(out, t * out.shape[1] * NR, out.shape[1], correction[0], correction[1])


@numba.njit(fastmath=FASTMATH, cache=True, _nrt=False)
def tile_values(v_chunks, p, first_key, keys, depth, out):
    """out[t, d, c] += sum_j v[first_key + j, d] p[t, j, c] over sliver t's keys[t] keys, that is
    o^T += v_tile^T p^T. A chunk of v with fewer than MR columns (chunk_columns) takes a tile of
    its rows only (short_kernel_strided: D = 64 = 4 x 12 + 8 + 8 two 8-row tiles, D = 32 = 2 x 12
    + 8 one, D = 20 = 12 + 8 one)."""
    chunks = v_chunks.shape[0]
    flat_v, flat_p = v_chunks.reshape(-1), p.reshape(-1)
    for t in range(len(keys)):
        if keys[t] == 0:
            continue
        for s in range(chunks):
            row, held = chunk_columns(s, chunks, depth, MR)
            if held < MR:
                short_kernel_strided(flat_v, (s * v_chunks.shape[1] + first_key) * MR, keys[t], flat_p,
                                     t * p.shape[1] * NR, NR, out[t], row, 0, True, held)
            else:
                micro_kernel(v_chunks[s, first_key:first_key + keys[t]], p[t], out[t], row, 0, True)


@numba.njit(cache=True, _nrt=False)
def write_rows(out, row_max, row_sum, inverse, first_query, n_queries, depth, o, start, stride, lse):
    """o's rows (at start + query * stride in the flat o) and lse of the block's queries: o^T
    (out, a sliver of NR queries across) scaled by 1 / row sum (into `inverse`, NR floats) along
    its rows, then turned WIDTH x WIDTH floats at a time in registers (simd.transpose_square); a
    ragged edge a float at a time. (Down out's columns a float at a time, a tenth of a GPT head's
    forward.)"""
    rows = out.shape[1]
    whole_depth = depth // WIDTH * WIDTH
    for t in range(out.shape[0]):
        first = first_query + t * NR
        for c in range(NR):
            inverse[c] = 0   # padding: never written
            if first + c < n_queries:
                inverse[c] = np.float32(1) / row_sum[t * NR + c]
                lse[first + c] = row_max[t * NR + c] * math.log(2) + math.log(row_sum[t * NR + c])
        for d in range(depth):
            for c0 in range(0, NR, WIDTH):
                at = (t * rows + d) * NR + c0
                store(out, at, multiply(load(out, at), load(inverse, c0)))
        for c0 in range(0, NR, WIDTH):
            whole = first + c0 + WIDTH <= n_queries
            for d0 in range(0, whole_depth if whole else 0, WIDTH):
                transpose_square(out, (t * rows + d0) * NR + c0, NR, o, start + (first + c0) * stride + d0, stride)
            for c in range(c0, min(c0 + WIDTH, n_queries - first)):
                for d in range(whole_depth if whole else 0, depth):
                    o[start + (first + c) * stride + d] = out[t, d, c]


@numba.njit(cache=True)
def block_scratch(chunks):
    """What forward_block works in, made once for all the blocks a task or thread runs: scores^T,
    o^T (of `chunks` MR-row chunks of D), the running row max and sum, each sliver's keys of a
    tile, 1 / row sum. (Made anew for each block, six arrays a block and one a sliver had cost
    the GPT's 64 heads of 128 x 32, causal, 1-4%: one core of an Intel Xeon, family 6 model 207,
    the two alternating in one process, best us of three runs, 1361 / 1357 / 1320 -> 1301 / 1344
    / 1278, the same floats; attention_backward.tile_scratch likewise.)"""
    return (aligned_floats(QUERY_BLOCK * KEY_TILE).reshape((QUERY_BLOCK // NR, KEY_TILE, NR)),
            aligned_floats(QUERY_BLOCK * chunks * MR).reshape((QUERY_BLOCK // NR, chunks * MR, NR)),
            np.empty(QUERY_BLOCK, np.float32), np.empty(QUERY_BLOCK, np.float32),
            np.empty(QUERY_BLOCK // NR, np.int64), aligned_floats(NR))


@numba.njit(cache=True, _nrt=False)
def forward_block(q_slivers, k_slivers, v_chunks, first_query, n_queries, n_keys, depth, causal,
                  o, start, stride, lse, scratch):
    """One task: o and lse for queries [first_query, first_query + QUERY_BLOCK) of one head, in
    `scratch` (block_scratch's arrays)."""
    scores, out, row_max, row_sum, keys, inverse = scratch
    out[:] = 0
    row_max[:] = -np.inf
    row_sum[:] = 0
    offset = n_keys - n_queries
    last_query = min(first_query + QUERY_BLOCK, n_queries) - 1
    slivers = (last_query - first_query) // NR + 1      # query slivers with a query in them
    end = min(n_keys, last_query + offset + 1) if causal else n_keys
    keys = keys[:slivers]
    for first_key in range(0, end, KEY_TILE):
        # the keys of the tile that each sliver's queries see, to a whole number of k slivers:
        # under the causal mask a sliver stops at its own last query's diagonal, so a short last
        # tile, or one cut by the diagonal, costs what each sliver sees, not the block's most
        for t in range(slivers):
            sliver_end = min(end, first_query + (t + 1) * NR + offset) if causal else end
            keys[t] = -(-max(0, min(KEY_TILE, sliver_end - first_key)) // MR) * MR
        most = keys[slivers - 1]   # the last sliver's, the most
        crosses_diagonal = causal and first_key + most - 1 > first_query + offset
        if crosses_diagonal or first_key + most > n_keys:
            tile_scores(q_slivers, k_slivers, first_query, first_key, keys, scores)
            mask_tile(scores, first_query, first_key, keys, n_keys, offset, causal)
            online_softmax(scores, keys, row_max, row_sum, out)
        else:
            tile_exps(q_slivers, k_slivers, first_query, first_key, keys, scores, row_max, row_sum, out)
        tile_values(v_chunks, scores, first_key, keys, depth, out)
    write_rows(out, row_max, row_sum, inverse, first_query, n_queries, depth, o, start, stride, lse)


def forward_kernel(q_slivers, k_slivers, v_chunks, n_keys, causal, o, o_stride, o_starts, lse):
    heads, n_queries = lse.shape
    depth = q_slivers.shape[2]
    blocks = -(-n_queries // QUERY_BLOCK)
    for task in numba.prange(heads * blocks):
        head, block = task // blocks, task % blocks
        forward_block(q_slivers[head], k_slivers[head], v_chunks[head], block * QUERY_BLOCK, n_queries,
                      n_keys, depth, causal, o, o_starts[head], o_stride, lse[head],
                      block_scratch(v_chunks.shape[1]))


def forward_by_head(q, k, v, n_queries, n_keys, q_factor, causal, q_slots, k_slots, v_slots, o, o_stride, o_starts,
                    lse):
    """forward_kernel's work with whole heads as tasks: task `part` takes a run of heads and, a
    head at a time, packs its q, k, v into slot `part` (pack_head) and runs all its blocks of
    queries on them, while they are in L2, having asked for the next head's rows (prefetch_rows).
    q, k, v are Rows."""
    heads, parts = lse.shape[0], q_slots.shape[0]
    blocks = -(-n_queries // QUERY_BLOCK)
    depth = q_slots.shape[2]
    for part in numba.prange(parts):
        scratch = block_scratch(v_slots.shape[1])
        for head in range(part * heads // parts, (part + 1) * heads // parts):
            pack_head(q, k, v, head, n_queries, n_keys, q_factor, q_slots[part], k_slots[part], v_slots[part])
            if head + 1 < (part + 1) * heads // parts:
                prefetch_rows(q, head + 1, n_queries, depth)
                prefetch_rows(k, head + 1, n_keys, depth)
                prefetch_rows(v, head + 1, n_keys, depth)
            for block in range(blocks):
                forward_block(q_slots[part], k_slots[part], v_slots[part], block * QUERY_BLOCK, n_queries, n_keys,
                              q_slots.shape[2], causal, o, o_starts[head], o_stride, lse[head], scratch)


PACKED = float32[:, :, :, ::1]
STARTS = int64[::1]
ROWS = numba.types.Tuple((numba.types.Array(float32, 1, "C", readonly=True), int64, STARTS))
with slp_vectorize():   # online_softmax's 16-lane loops vectorize only with SLP on
    forward_kernel = numba.njit(
        void(PACKED, PACKED, PACKED, int64, boolean, float32[::1], int64, STARTS, float32[:, ::1]),
        parallel=True, cache=True)(forward_kernel)
    forward_by_head = numba.njit(
        void(ROWS, ROWS, ROWS, int64, int64, float32, boolean, PACKED, PACKED, PACKED, float32[::1], int64, STARTS,
             float32[:, ::1]),
        parallel=True, cache=True)(forward_by_head)


def padded(n, multiple):
    return -(-n // multiple) * multiple


def rows_of(x, head_axes, time_axis, offset=0):
    """Rows (flat x, row stride, start per head) of the (T, D) matrices of x, a C-contiguous
    array whose last axis is D: the heads run over head_axes (batch, head), the rows over
    time_axis; `offset` floats from the start (k and v in a qkv array)."""
    x = np.ascontiguousarray(x)
    strides = [stride // x.itemsize for stride in x.strides]
    batch_axis, head_axis = head_axes
    starts = head_starts(x.shape[batch_axis], strides[batch_axis], x.shape[head_axis], strides[head_axis],
                         offset)
    return x.reshape(-1), strides[time_axis], starts


@functools.lru_cache(maxsize=64)
def head_starts(batches, batch_stride, heads, head_stride, offset):
    """(batches * heads,) int64: offset + b * batch_stride + h * head_stride, b-major. Cached: a
    model calls attention at the same few shapes every step (the kernels only read it)."""
    starts = offset + np.arange(batches)[:, None] * batch_stride + np.arange(heads) * head_stride
    return starts.reshape(-1).astype(np.int64)


def workspace(shapes):
    """Unfilled float32 arrays of these shapes, cut (at 64-byte boundaries) from one block of
    memory.empty's, reused from call to call (a dozen separate blocks of a few MB each had been
    handed back to the OS on free and page-faulted in again: ~5 ms a call at T = 1024)."""
    sizes = [-(-math.prod(shape) // 16) * 16 for shape in shapes]
    block = memory.empty((sum(sizes),))
    starts = np.cumsum([0] + sizes)
    return [block[start:start + math.prod(shape)].reshape(shape)
            for start, shape in zip(starts, shapes)]


def whole_heads(heads, threads):
    """Whether heads are the tasks (forward_by_head, and the backward's likewise): when they
    share out evenly over the threads, or are many enough that an uneven share costs little."""
    return heads % threads == 0 or heads >= 8 * threads


def forward(q, k, v, n_queries, n_keys, depth, causal, scale, o, lse, by_head=None):
    """o (through its Rows) and lse (heads, Tq) from q, k, v given as Rows: packed and run a head
    at a time on each thread (by_head, by default where whole_heads), else every head packed
    first, then tasks of QUERY_BLOCK queries; the same floats either way."""
    heads, threads = len(q[2]), numba.get_num_threads()
    q_factor = np.float32(float(scale) * LOG2_OF_E)   # scores in base-2 units
    by_head = whole_heads(heads, threads) if by_head is None else by_head
    slots = min(heads, threads) if by_head else heads
    # padded to whole slivers only: a task reads no sliver past its last query or key
    q_slivers, k_slivers, v_chunks = workspace([(slots, padded(n_queries, NR) // NR, depth, NR),
                                                (slots, padded(n_keys, MR) // MR, depth, MR),
                                                (slots, -(-depth // MR), padded(n_keys, MR), MR)])
    if by_head:
        forward_by_head(q, k, v, n_queries, n_keys, q_factor, bool(causal), q_slivers, k_slivers, v_chunks,
                        o[0], o[1], o[2], lse)
        return
    pack_operands(q, k, v, n_queries, n_keys, q_factor, q_slivers, k_slivers, v_chunks)
    forward_kernel(q_slivers, k_slivers, v_chunks, n_keys, bool(causal), o[0], o[1], o[2], lse)


# q (B, H, Tq, D), k and v (B, H, Tk, D): float32, C-contiguous -> o (B, H, Tq, D), lse (B, H, Tq)
def attention_forward(q, k, v, causal, scale):
    batch, heads, n_queries, depth = q.shape
    o = memory.empty(q.shape)
    lse = np.empty((batch * heads, n_queries), np.float32)
    forward(*(rows_of(x, (0, 1), 2) for x in (q, k, v)), n_queries, k.shape[2], depth, causal, scale,
            rows_of(o, (0, 1), 2), lse)
    return o, lse.reshape(q.shape[:3])


# qkv (B, T, 3, H, D): q, k and v side by side, float32, C-contiguous -> o (B, T, H, D), lse (B, H, T)
def attention_qkv_forward(qkv, causal, scale):
    batch, time, _, heads, depth = qkv.shape
    o = memory.empty((batch, time, heads, depth))
    lse = np.empty((batch * heads, time), np.float32)
    q, k, v = (rows_of(qkv, (0, 3), 1, part * heads * depth) for part in range(3))
    forward(q, k, v, time, time, depth, causal, scale, rows_of(o, (0, 2), 1), lse)
    return o, lse.reshape(batch, heads, time)
